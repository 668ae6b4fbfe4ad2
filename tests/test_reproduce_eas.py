"""``nas-gym reproduce eas`` (EAS, seed 002): the real command at a tiny size writes its report."""

from __future__ import annotations

import json

from nas_gym.experiments.cli import main


def test_reproduce_eas_tiny_writes_report(tmp_path, capsys) -> None:
    out = tmp_path / "eas"
    assert main(["reproduce", "eas", "--tiny", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for figure in ("87.07%", "4.89%", "4.23%", "300, then 150", "5 GTX 1080 GPUs"):
        assert figure in report, figure  # the paper's figures (Tables 1-3, §Start with Small ...)
    claims = [line for line in report.splitlines() if line.startswith(("- PASS:", "- FAIL:"))]
    assert len(claims) == 2  # one line per claim
    assert (out / "fig5.png").is_file()
    runs = json.loads((out / "seed0" / "runs.json").read_text())
    eas, rand = runs["eas"], runs["random"]
    assert len(eas) == 2 and len(rand) == 1  # the stage protocol on the first seed, EAS only
    assert [len(s["children"]) for s in eas] == [2, 1] and len(rand[0]["children"]) == 2
    assert eas[1]["start_accuracy"] == eas[0]["retrained"]["accuracy"]  # retrained best starts 2
    for stage in eas + rand:  # function preserved: the inherited weights score as the start net
        assert all(c["inherited"] == stage["start_accuracy"] for c in stage["children"])
