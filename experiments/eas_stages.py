"""EAS's stage protocol (Cai et al. 2018, seed 002, §"Start with Small Network"): the project's one
stage runner.

"we divide the whole architecture search process into two stages where we allow the
meta-controller to take 5 steps of Net2Deeper action and 4 steps of Net2Wider action in the first
stage. After 300 networks are sampled, we take the network which performs best currently and train
it with a longer period of time (100 epochs) to be used as the start point for the second stage.
Similarly, in the second stage ... stop exploration after 150 networks are sampled."

:func:`run_eas_stages` runs any agent (``learn(env, total_episodes, callback)`` and
``num_episodes``: the EAS meta-controller, random transforms, ...) through stages of ``nets[i]``
networks each. ``Net2Net-v0`` takes its start net at construction, so every stage is a new env from
``make_env(start_net)``; one agent spans the stages (the EAS controller's heads do not depend on the
number of layer slots). The stage's best net (by the env's reward, among the stage's own episodes)
is trained ``retrain_epochs`` more (:func:`retrain`, stored as a child of that net, so the store's
lineage runs start net -> best -> retrained best -> next stage's children) and starts the next
stage. ``nas-gym reproduce eas`` is its command (:mod:`nas_gym.experiments.reproduce.eas`).

Example -- two stages of random transforms::

    import gymnasium as gym
    from nas_gym.agents import make_agent
    from nas_gym.experiments.eas_stages import run_eas_stages
    from nas_gym.store import EvaluationStore

    store = EvaluationStore("eas.sqlite")  # one store for all stages: the lineage crosses them
    stages = run_eas_stages(
        lambda start: gym.make("Net2Net-v0", start_net=start, store=store, protocol="eas"),
        make_agent("random", seed=0), nets=[30, 15], retrain_epochs=10)
    best = stages[-1]["best"]                      # a store record: key, architecture, result ...
    store.lineage(best["key"])                     # start net -> ... -> best: the transforms
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

from nas_gym.errors import ConfigError, bad_value
from nas_gym.evaluation import EvaluationPipeline
from nas_gym.evaluators import TrainEvaluator
from nas_gym.lineage import checkpoint_bytes, load_weights, stage_checkpoint

__all__ = ["retrain", "run_eas_stages"]


def retrain(env: gym.Env, key: str, epochs: int) -> dict[str, Any]:
    """Train the stored net ``key`` ``epochs`` more epochs from its weights with the env's training
    config (EAS: the stage's best, 100 epochs); the result is stored as a child of ``key`` with no
    transform (its fingerprint holds the training, so :func:`nas_gym.lineage.replay` rebuilds it)
    and its weights. Returns the new store record (``key``, ``result``, ...)."""
    base = env.unwrapped
    store, c = base.store, base.components
    model = load_weights(store, key, base.input_shape, base.num_classes).to(c.device)
    evaluator = TrainEvaluator(base.data, c.train_config.replace(epochs=epochs))
    pipeline = EvaluationPipeline(evaluator, store, base.reward_fn, base.input_shape,
                                  base.num_classes, device=c.pipeline.device,
                                  measure_latency=False)
    info, result = pipeline.evaluate(model.architecture, seed=c.seed, model=model,
                                     lineage={"parent": key, "transform": []})
    new = info["store_key"]
    if result is not None:
        if result.status not in ("ok", "timeout"):
            raise ConfigError(f"retraining key={key!r} ended with status={result.status!r} "
                              f"({result.message})")
        store.put_weights(new, checkpoint_bytes(result.model, key=new))
    return {"key": new, "result": store.get(new), "epochs": epochs}


def _check_nets(nets: Sequence[int]) -> list[int]:
    if isinstance(nets, (str, bytes)) or not isinstance(nets, Sequence) or not nets or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in nets):
        raise bad_value("nets", nets, "a non-empty list of integers >= 1 (networks per stage)")
    return list(nets)


def run_eas_stages(make_env: Callable[[Any], gym.Env], agent: Any, *, nets: Sequence[int],
                   start_net: Any = None, retrain_epochs: int = 0,
                   on_episode: Callable[[Any], Any] | None = None) -> list[dict[str, Any]]:
    """Run ``len(nets)`` EAS stages, stage ``i`` sampling ``nets[i]`` networks (EAS: 300, 150).

    :param make_env: ``start_net -> env`` (a ``Net2Net-v0``, wrapped or not; all on one store, so
        the best child's fine-tuned weights are there); first called with ``start_net``.
    :param agent: ``learn(env, total_episodes, callback)`` + ``num_episodes`` (one agent spans the
        stages: stage ``i`` runs it to ``num_episodes + nets[i]``).
    :param retrain_epochs: train each stage's best this many more epochs before it starts the next
        stage (EAS: 100; 0: start from its fine-tuned weights). The last stage's best is not
        retrained.
    :param on_episode: called with every finished episode (e.g. a log).
    :return: per stage ``{"start_key", "start_accuracy", "episodes", "best", "retrained"}``:
        ``episodes`` the agent's episodes of the stage, ``best`` the store record of the best of
        them by the env's reward, ``retrained`` :func:`retrain`'s record (None when not retrained).
    """
    nets = _check_nets(nets)
    if isinstance(retrain_epochs, bool) or not isinstance(retrain_epochs, int) \
            or retrain_epochs < 0:
        raise bad_value("retrain_epochs", retrain_epochs, "an integer >= 0")
    stages: list[dict[str, Any]] = []
    for i, n in enumerate(nets):
        env = make_env(start_net)
        try:
            seen: list[Any] = []

            def record(episode: Any, seen: list[Any] = seen) -> None:
                seen.append(episode)
                if on_episode is not None:
                    on_episode(episode)

            agent.learn(env, agent.num_episodes + n, callback=record)
            base = env.unwrapped
            if not seen:
                raise ConfigError(f"stage {i} finished without an episode")
            best_episode = max(seen, key=lambda e: e.reward)  # ties: the first
            best = next(r for r in base.store.records() if r["key"] ==
                        best_episode.info["store_key"])
            start = base.store.get(base.start_key) or {}
            stage = {"start_key": base.start_key, "start_accuracy": start.get("accuracy"),
                     "episodes": seen, "best": best, "retrained": None}
            last_key = best["key"]
            if retrain_epochs and i < len(nets) - 1:
                stage["retrained"] = retrain(env, best["key"], retrain_epochs)
                last_key = stage["retrained"]["key"]
            stages.append(stage)
            start_net = stage_checkpoint(base.store, last_key)
        finally:
            env.close()
    return stages
