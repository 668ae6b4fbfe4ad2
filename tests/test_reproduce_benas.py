"""``nas-gym reproduce benas``: the real command at a tiny size writes its report (paper 000)."""

from __future__ import annotations

import json

from nas_gym.experiments.cli import main


def test_reproduce_benas_tiny_writes_report(tmp_path, capsys) -> None:
    out = tmp_path / "benas"
    assert main(["reproduce", "benas", "--tiny", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "3.36 -> 96.02" in report and "1.96 -> 95.86" in report  # Table 4 (B-ENAS rows)
    assert "1040 -> 95.97" in report and "92.8 -> 96.06" in report  # Tables 3 and 5
    claims = [line for line in report.splitlines() if line.startswith("- PASS") or
              line.startswith("- FAIL")]
    assert len(claims) == 3  # meets its budget; more complex cells; higher accuracy
    runs = json.loads((out / "benas_runs.json").read_text())
    assert sorted({r["final_budget"] for r in runs}) == [40_000, 80_000, 160_000]
    for r in runs:  # each run searched, selected and retrained a real cell
        assert (out / f"params{r['final_budget']}-seed{r['seed']}" / "benas.json").is_file()
        assert r["final_params"] > 0 and 0 <= r["test_accuracy"] <= 1 and r["cpu_s"] > 0
    assert (out / "benas_budgets.png").is_file()
