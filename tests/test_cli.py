"""``nas-gym search``: the real command with a tiny budget, its outputs, resume after SIGKILL, and
one clear line for every bad value."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image

from nas_gym.agents.state_file import read_state
from nas_gym.checkpoint import load_model
from nas_gym.experiments.cli import load_config_file, main, parse_budget, parse_mapping
from nas_gym.experiments.search_config import SearchConfig
from nas_gym.experiments.search_log import read_evaluations

NAS_GYM = shutil.which("nas-gym") or str(Path(sys.executable).parent / "nas-gym")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: real training, tiny: 32 training samples, one epoch, cells of at most 2 blocks.
TINY = ["--epochs", "1", "--train-size", "32", "--batch-size", "32", "-E", "max_blocks=2",
        "-E", "measure_latency=false", "-A", "batch_episodes=2", "--no-progress"]


def nas_gym_cmd(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([NAS_GYM, *args], capture_output=True, text=True, env=ENV,
                          timeout=300, **kwargs)


@pytest.mark.slow
def test_search_outputs_and_resume_after_sigkill(tmp_path) -> None:
    """The real command: killed mid-search, started again with the same --out, it resumes (no
    finished evaluation retrained, the controller continues from its saved state) and writes every
    output. (One test, so the suite starts the command twice, not three times.)"""
    out = tmp_path / "run"
    args = ["search", "--env", "CellNAS-v0", "--agent", "reinforce", "--episodes", "10",
            "--budget", "params=30000,flops=2e6", "--final-epochs", "1", "--out", str(out), *TINY]
    proc = subprocess.Popen([NAS_GYM, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    # meanwhile, a bad value through the installed command: one line, no traceback
    bad = nas_gym_cmd("search", "--env", "CelNAS-v0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.startswith("nas-gym: error: --env='CelNAS-v0'")
    assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    deadline = time.monotonic() + 240
    while len(read_evaluations(out)) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    first = read_evaluations(out)
    assert 5 <= len(first) < 10, len(first)
    saved = read_state(out / "agent_state.pt")["num_episodes"]
    assert saved >= 4

    done = nas_gym_cmd(*args)
    assert done.returncode == 0, done.stderr
    assert "best: reward" in done.stdout and "test accuracy" in done.stdout
    rows = read_evaluations(out)
    config = json.loads((out / "config.json").read_text())
    resumed = config["resumed_at_episode"]
    assert resumed == saved
    assert [r["episode"] for r in rows] == list(range(10))
    assert rows[:resumed] == first[:resumed]
    # the restored controller replays the episodes after its last update: from the store
    for before, after in zip(first[resumed:], rows[resumed:], strict=False):
        assert after["architecture"] == before["architecture"] and after["cache_hit"]
    trained = Counter(r["store_key"] for r in first + rows[resumed:] if not r["cache_hit"])
    assert max(trained.values()) == 1, "a finished evaluation was trained twice"
    _check_outputs(out, config, rows)


def _check_outputs(out: Path, config: dict, rows: list[dict]) -> None:
    assert config["config"]["episodes"] == 10 and config["config"]["agent"] == "reinforce"
    assert config["config"]["budget"] == {"params": 30000, "flops": 2000000.0}
    assert config["env_kwargs"]["store"] == str(out / "store.sqlite")
    assert config["env_kwargs"]["max_blocks"] == 2 and config["env_kwargs"]["epochs"] == 1
    for row in rows:
        assert {"reward", "accuracy", "costs", "penalty", "reward_parts", "status",
                "architecture", "cache_hit", "store_key"} <= set(row)
        assert {"params", "flops"} <= set(row["costs"])
        assert not [k for k in json.dumps(row).split('"') if "test" in k]  # validation only
    best = json.loads((out / "best.json").read_text())
    assert best["best"]["reward"] == max(r["reward"] for r in rows)
    final = best["final"]
    assert 0 <= final["test_accuracy"] <= 1 and final["architecture"]["n_normal"] == 3
    assert final["searched_architecture"] == best["best"]["architecture"]
    for name in ("best_so_far.png", "accuracy_vs_params.png", "accuracy_vs_flops.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
            image.load()
    assert (out / "agent_state.pt").is_file() and (out / "store.sqlite").is_file()
    model = load_model(out / "final" / "model.pt")  # the one documented call
    assert model.architecture.to_dict() == final["architecture"]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == final["params"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--env", "CelNAS-v0"], "--env='CelNAS-v0' is not accepted; expected one of"),
        (["--agent", "reinfroce"], "did you mean 'reinforce'"),
        (["--budget", "watts=5"], "--budget metric='watts'"),
        (["--budget", "params=-1"], "budget"),
        (["--budget", "params=lots"], "--budget='lots'"),
        (["--episodes", "-3"], "--episodes=-3 is not accepted; expected an integer >= 1"),
        (["--episodes", "abc"], "--episodes='abc'"),
        (["--final-epochs", "-1"], "--final-epochs"),
        (["--threads", "0"], "--threads"),
        (["--config", "missing.yaml"], "--config"),
        (["-A", "warp=9"], "keyword='warp'"),
        (["--agent", "dqn", "-A", "warp=9"], "keyword='warp'"),
        (["-E", "warp=9"], "does not accept the keyword 'warp'"),
        (["--dataset", "imagenet"], "dataset='imagenet'"),
        (["--workers", "0"], "--workers=0 is not accepted; expected an integer >= 1"),
        (["--workers", "2", "--agent", "random"], "agents that evaluate a batch concurrently"),
        (["--backend", "dask"], "--backend='dask' is not accepted; expected one of"),
        (["--address", "auto"], "expected ray when --address is given"),
        (["-E", "evaluator_backend=ray"], "use --backend / --address"),
        (["--method", "benas", "--workers", "2"], "1 / local with --method benas"),
    ],
)
def test_bad_values_give_one_line_and_status_2(argv, needle, tmp_path, capsys) -> None:
    code = main(["search", "--out", str(tmp_path / "run"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("nas-gym: error: ") and needle in err, err


def test_bad_command_line_syntax_exits_2(capsys) -> None:
    for argv in (["serch"], ["search", "--episodes"], ["search", "--bogus"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("nas-gym: error: "), err


def test_config_file_and_value_parsing(tmp_path) -> None:
    assert parse_budget("params=30000,flops=1e6") == {"params": 30000, "flops": 1e6}
    assert parse_budget("params=1000:30000") == {"params": [1000, 30000]}
    assert parse_budget("params=:5e4") == {"params": [None, 50000]}
    assert parse_budget("25000") == 25000 and parse_budget("none") is None
    assert parse_mapping('{"max_blocks": 4, "ops": "nasnet"}', "x") == {"max_blocks": 4,
                                                                         "ops": "nasnet"}
    assert parse_mapping("max_blocks=4,lr=1e-3,measure_latency=false", "x") == {
        "max_blocks": 4, "lr": 1e-3, "measure_latency": False}
    config = tmp_path / "search.yaml"
    config.write_text("env: CellNAS-v0\nepisodes: 3\nenv_kwargs: {max_blocks: 9}\n")
    code = main(["search", "--config", str(config), "--out", str(tmp_path / "run"),
                 "--episodes", "-1"])  # the command line wins over the file
    assert code == 2
    config.write_text("episodez: 3\n")
    assert main(["search", "--config", str(config)]) == 2
    shipped = Path(__file__).parents[1] / "experiments" / "configs" / "digits-cell.yaml"
    SearchConfig(**{**asdict(SearchConfig()), **load_config_file(str(shipped))}).validate()


@pytest.mark.slow
def test_concurrent_search_killed_and_resumed_repeats_no_finished_evaluation(tmp_path) -> None:
    """``--workers 2``: REINFORCE's batch trains in two worker processes. The driver is killed
    (SIGKILL) mid-search and started again: finished evaluations come from the store, the
    evaluations in flight at the kill are redone, and the log is the same as one unbroken run's."""
    out = tmp_path / "run"
    args = ["search", "--env", "CellNAS-v0", "--agent", "reinforce", "--episodes", "8",
            "--workers", "2", "--final-epochs", "0", "--out", str(out), *TINY]
    proc = subprocess.Popen([NAS_GYM, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 240
    while len(read_evaluations(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.kill()
    proc.wait()
    first = read_evaluations(out)
    assert 3 <= len(first) < 8, len(first)
    assert len(workers) >= 2  # the two evaluation workers (and multiprocessing's tracker)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()], "workers outlived the driver"
    done = nas_gym_cmd(*args)
    assert done.returncode == 0, done.stderr
    rows = read_evaluations(out)
    resumed = json.loads((out / "config.json").read_text())["resumed_at_episode"]
    assert resumed % 2 == 0 and [r["episode"] for r in rows] == list(range(8))
    assert rows[:resumed] == first[:resumed]
    for before, after in zip(first[resumed:], rows[resumed:], strict=False):
        assert after["architecture"] == before["architecture"] and after["cache_hit"]
    trained = Counter(r["store_key"] for r in first + rows[resumed:] if not r["cache_hit"])
    assert max(trained.values()) == 1, "a finished evaluation was trained twice"
    # the same search in one piece, one worker: the same episodes (timing does not matter)
    whole = nas_gym_cmd(*[a if a != str(out) else str(tmp_path / "whole") for a in args
                          if a not in ("--workers", "2")])
    assert whole.returncode == 0, whole.stderr
    assert [(r["architecture"], r["accuracy"]) for r in read_evaluations(tmp_path / "whole")] \
        == [(r["architecture"], r["accuracy"]) for r in rows]


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
