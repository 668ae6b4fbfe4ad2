"""A researcher's habits: a search watched in TensorBoard (the event file read back), one parser
for search and bench, agents by import path from the current folder, nothing written by a start
that fails, a resumed run that says so, plots whose "best" is the reward's best.

The searches answer from the committed table (``evaluator="table"``): no child trains here."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from nas_gym.evaluators.table import load_table
from nas_gym.experiments.bench import bench_agent_kwargs, run_bench
from nas_gym.experiments.bench_job import BenchConfig
from nas_gym.experiments.cli import build_parser, main
from nas_gym.experiments.options import parse_budget
from nas_gym.experiments.search import run_search
from nas_gym.experiments.search_config import SearchConfig
from nas_gym.experiments.search_log import read_evaluations
from nas_gym.table import DEFAULT_TABLE

TABLE = load_table(DEFAULT_TABLE)
TABLE_ENV = {**TABLE.env_kwargs, "evaluator": "table", "device": "cpu", "measure_latency": False,
             "evaluator_kwargs": {"path": str(DEFAULT_TABLE), "noise": "seed"}}


def _scalars(logdir) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]} | {
        "_images": acc.Tags()["images"]}


def _search(out, agent="ppo", episodes=12, **extra) -> SearchConfig:
    return SearchConfig(env="MacroNAS-v0", agent=agent, episodes=episodes, budget={"params": 5000},
                        env_kwargs=dict(TABLE_ENV), final_epochs=0, out=str(out),
                        progress=False, **extra)


def test_search_tensorboard_event_file_holds_the_evaluations(tmp_path):
    pytest.importorskip("tensorboard")
    logdir = tmp_path / "tb"
    result = run_search(_search(tmp_path / "run", agent="ppo", episodes=10,
                                agent_kwargs={"n_steps": 16, "batch_size": 8},
                                tensorboard=str(logdir)))
    rows = read_evaluations(tmp_path / "run")
    tags = _scalars(logdir)
    for tag in ("eval/reward", "eval/accuracy", "eval/penalty", "cost/params", "cost/flops",
                "best/reward", "best/accuracy"):
        assert [e.step for e in tags[tag]] == list(range(1, 11)), tag
    assert [e.value for e in tags["eval/reward"]] == pytest.approx([r["reward"] for r in rows])
    assert tags["best/reward"][-1].value == pytest.approx(result["best"]["reward"])
    assert any(t.startswith("train/") for t in tags), sorted(tags)  # SB3's own curves, same run
    assert "pareto/params" in tags["_images"]
    hparams = list(logdir.glob("**/events.out.tfevents.*"))
    assert hparams  # the config as hparams (tensorboard's HPARAMS plugin reads it)


def test_tensorboard_flag_without_the_package_fails_at_parsing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    for command in ("search", "bench"):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([command, "--tensorboard", "tb"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "tensorboard package is not installed" in err and "pip install" in err


def test_one_budget_and_keyword_syntax_for_search_and_bench():
    assert parse_budget("params=5000") == parse_budget('{"params": 5000}') == {"params": 5000}
    assert parse_budget("{params: [1000, 5000]}") == parse_budget("params=1000:5000")
    for command in ("search", "bench"):
        args = build_parser().parse_args([command, "--budget", "params=5000", "-A", "seed=3",
                                          "--agent-kwargs", "n_steps=16"])
        assert parse_budget(args.budget) == {"params": 5000}
        assert args.agent_kwarg == ["seed=3"] and args.agent_kwargs == "n_steps=16"
    assert bench_agent_kwargs(("ppo", "random"), {"n_steps": 8, "random": {"x": 1}}) == {
        "ppo": {"n_steps": 8}, "random": {"n_steps": 8, "x": 1}}
    args = build_parser().parse_args(["bench", "--agent", "default", "mod:Cls"])
    assert args.agents == ["default", "mod:Cls"]


THIRD_PARTY = textwrap.dedent('''
    class Deaf:
        """Never calls its callback: the env wrapper must still record it."""

        def __init__(self, seed=0):
            self.seed = seed

        def learn(self, env, total_episodes, callback=None):
            for i in range(total_episodes):
                obs, info = env.reset(seed=self.seed * 1000 + i)
                done = False
                while not done:
                    a = env.action_space.sample(mask=info["action_mask"])
                    obs, r, term, trunc, info = env.step(a)
                    done = term or trunc
            return self

    class OnlyCells:
        supported_envs = ("CellNAS-v0",)

        def learn(self, env, total_episodes, callback=None):
            raise AssertionError("never started")
''')


def test_third_party_agents_from_the_current_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "myagents.py").write_text(THIRD_PARTY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    # search: an import path, as bench takes; the wrapper records the deaf agent
    run_search(_search("run", agent="myagents:Deaf", episodes=4))
    assert [r["episode"] for r in read_evaluations("run")] == [0, 1, 2, 3]
    # a mismatch is refused before anything is written, so the corrected command runs
    assert main(["search", "--env", "MacroNAS-v0", "--agent", "myagents:OnlyCells",
                 "--out", "bad", "--no-progress"]) == 2
    assert "drives only ['CellNAS-v0']" in capsys.readouterr().err and not (tmp_path /
                                                                          "bad").exists()
    assert main(["search", "--env", "MacroNAS-v0", "--agent", "evolution", "--out", "bad",
                 "--no-progress", "-E", "warp=1"]) == 2
    assert not (tmp_path / "bad").exists()
    # bench: every agent checked before any job; the deaf agent is recorded, not dropped
    cfg = BenchConfig(agents=("random", "myagents:OnlyCells"), seeds=1, evaluations=5,
                      workers=1, out="bench")
    with pytest.raises(ValueError, match="drives only"):
        run_bench(cfg, progress=False)
    assert not (tmp_path / "bench").exists()
    cfg = BenchConfig(agents=("myagents:Deaf", "recurrent_ppo"), envs=("macro-digits",),
                      seeds=1, evaluations=5, workers=1, out="bench2",
                      agent_kwargs={"recurrent_ppo": {"n_steps": 8}},
                      tensorboard="tb" if _has_tensorboard() else None)
    summary = run_bench(cfg, progress=False)["summary"]
    assert {s["agent"]: s["evaluations"] for s in summary} == {"myagents:Deaf": 5,
                                                               "recurrent_ppo": 5}
    if cfg.tensorboard:  # one TensorBoard run per job
        tags = _scalars(tmp_path / "tb" / DEFAULT_TABLE.stem / "myagents_Deaf" / "seed0")
        assert [e.step for e in tags["eval/reward"]] == [1, 2, 3, 4, 5]


def test_plain_recurrent_ppo_class_by_import_path():
    """``--agents sb3_contrib:RecurrentPPO``: its own policy name, the int feature size."""
    from nas_gym.experiments.bench_job import make_bench_agent, make_bench_env

    env = make_bench_env(DEFAULT_TABLE, BenchConfig(), seed=0)
    agent = make_bench_agent("sb3_contrib:RecurrentPPO", 0, {"n_steps": 8, "batch_size": 8})
    assert agent.policy == "MlpLstmPolicy"
    seen = []
    agent.learn(env, total_episodes=3, callback=seen.append)
    assert len(seen) == 3 and agent.best() is not None


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def test_resumed_search_says_so_and_plots_best_by_reward(tmp_path, capsys):
    config = _search(tmp_path / "run", agent="random", episodes=6)
    run_search(config)
    assert "resuming" not in capsys.readouterr().err
    config.episodes = 9
    run_search(config)
    err = capsys.readouterr().err
    assert "resuming the search" in err and "at episode 6 of 9" in err
    from nas_gym.experiments.plots import best_so_far_figure

    rows = read_evaluations(tmp_path / "run")
    fig = best_so_far_figure(rows)
    ax = fig.axes[0]
    best_line = [line for line in ax.get_lines() if line.get_label() == "best reward so far"][0]
    rewards = [r["reward"] for r in rows]
    assert list(best_line.get_ydata()) == pytest.approx(
        [max(rewards[: i + 1]) for i in range(len(rewards))])
    assert all(float(t).is_integer() for t in ax.get_xticks())
    saved = json.loads((tmp_path / "run" / "best.json").read_text())["best"]
    assert saved["reward"] == max(rewards)
