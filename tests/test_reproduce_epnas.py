"""``nas-gym reproduce epnas``: the real command at a tiny size writes its report."""

from __future__ import annotations

from nas_gym.experiments.cli import main


def test_reproduce_epnas_tiny_writes_report(tmp_path, capsys) -> None:
    out = tmp_path / "epnas"
    assert main(["reproduce", "epnas", "--tiny", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "4.31" in report and "0.88" in report  # the paper's figures, Table 5
    assert "one fifth" in report and "16 / 4" in report  # §1 and Table 4
    verdicts = [line for line in report.splitlines() if line.startswith(("- PASS:", "- FAIL:"))]
    assert len(verdicts) == 3  # one per claim
    for agent in ("epnas", "random"):
        assert (out / f"{agent}-seed0" / "evaluations.jsonl").is_file()
    assert (out / "best_so_far.png").is_file()
