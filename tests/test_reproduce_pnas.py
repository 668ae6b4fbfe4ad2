"""``nas-gym reproduce pnas``: the real command at a tiny size writes its report."""

from __future__ import annotations

import pytest

from nas_gym.errors import ConfigError
from nas_gym.experiments.cli import main
from nas_gym.experiments.reproduce._common import command_line, load_paper_config, paper_sized
from nas_gym.experiments.search_config import SearchConfig


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


def test_paper_sized_settings_resolve_to_valid_searches() -> None:
    """``--dataset cifar10``: each config's `paper` section gives valid search configs (nothing
    trains), and a config without one is refused naming the option."""
    for paper in ("seed001", "epnas", "pnas"):
        config = paper_sized(load_paper_config(paper), "cifar10", "/data")
        assert config["search"]["env_kwargs"]["dataset"] == "cifar10"
        assert config["search"]["env_kwargs"]["data_root"] == "/data"
        for name, kwargs in config.get("agents", {"reinforce": {}}).items():
            agent = config["search"].get("agent", kwargs.get("agent", name))
            SearchConfig(**{**config["search"], "agent": agent}).validate()
        assert command_line(paper, "o", False, config).endswith("--dataset cifar10 --data-root /data")
    assert paper_sized(load_paper_config("epnas"), "cifar10", None)["agents"]["random"] == {}
    with pytest.raises(ConfigError, match="--dataset"):
        paper_sized({"search": {}}, "cifar10", None)
