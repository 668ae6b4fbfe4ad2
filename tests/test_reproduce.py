"""``nas-gym reproduce``: the real command at a tiny size writes its report."""

from __future__ import annotations

from nas_gym.experiments.cli import main


def test_reproduce_seed001_tiny_writes_report(tmp_path, capsys) -> None:
    out = tmp_path / "seed001"
    assert main(["reproduce", "seed001", "--tiny", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "239,642" in report and "161,346" in report  # the paper's figures, §4.3
    assert ("PASS:" in report) != ("FAIL:" in report)
    for run in ("accuracy_only", "cost_aware"):
        assert (out / run / "evaluations.jsonl").is_file()


def test_reproduce_unknown_paper_is_refused_naming_the_papers(tmp_path, capsys) -> None:
    assert main(["reproduce", "nope", "--tiny", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "PAPER" in err and "nope" in err and "seed001" in err
