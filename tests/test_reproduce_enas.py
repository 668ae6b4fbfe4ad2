"""``nas-gym reproduce enas``: the real command at a tiny size writes its report (paper 003)."""

from __future__ import annotations

import json

from nas_gym.experiments.cli import main


def test_reproduce_enas_tiny_writes_report(tmp_path, capsys) -> None:
    out = tmp_path / "enas"
    assert main(["reproduce", "enas", "--tiny", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| 0.45 | 4.6 | 3.54 |" in report  # ENAS micro, the lecture's Results table
    assert "| 450 | 3-4 | 3.3 | 3.41 |" in report  # NASNet-A, same table
    claims = [line for line in report.splitlines() if line.startswith("- PASS") or
              line.startswith("- FAIL")]
    assert len(claims) == 1
    summary = json.loads((out / "enas_vs_scratch.json").read_text())
    enas, scratch = summary["enas"], summary["scratch"]
    assert enas["evaluations"] == scratch["evaluations"]  # the same number of evaluations
    assert len((out / "scratch" / "evaluations.jsonl").read_text().splitlines()) \
        == scratch["evaluations"]  # each one a child trained from scratch
    for name in ("enas", "scratch"):  # both answers retrained the same way
        r = summary[name]
        assert [f["epochs"] for f in r["finals"]] == [summary["final_epochs"]] and r["cpu_s"] > 0
        assert (out / name / "retrain-seed0" / "final" / "model.pt").is_file()
    assert (out / "enas_vs_scratch.png").is_file()
