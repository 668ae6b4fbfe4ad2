"""``nas-gym reproduce pnas``: the real command at a tiny size writes its report."""

from __future__ import annotations

from experiments.cli import main


def test_reproduce_pnas_tiny_writes_report(tmp_path, capsys) -> None:
    out = tmp_path / "pnas"
    assert main(["reproduce", "pnas", "--tiny", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    verdicts = [line for line in report.splitlines() if line.startswith(("- PASS:", "- FAIL:"))]
    assert len(verdicts) == 2  # one per claim
    assert "Spearman" in report and "qualitatively" in report
    for agent in ("pnas", "random"):
        assert (out / f"{agent}-seed0" / "evaluations.jsonl").is_file()
    assert (out / "pnas-seed0" / "agent_state.pt").is_file()  # the surrogate that was scored
    assert (out / "best_so_far.png").is_file()
