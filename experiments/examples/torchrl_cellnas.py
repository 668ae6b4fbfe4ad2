"""TorchRL drives ``CellNAS-v0``: a masked REINFORCE search written with TorchRL's own pieces.

Nothing here is nas_gym-specific beyond the env id and its keywords: TorchRL's ``GymEnv`` makes the
env with ``gym.make("nas_gym:CellNAS-v0", observation="dict", info_keys="fixed", ...)`` - the
action mask travels in the observation (``{"observation", "action_mask"}``) and every step's info
has the same numeric keys, which TorchRL's info reader turns into tensordict entries
(``accuracy``, ``penalty``, ``cost_params``, ...). The policy is a ``ProbabilisticActor`` over a
``MaskedCategorical`` (it never picks an action the mask forbids), episodes come from
``env.rollout``, and the update is REINFORCE with a moving-average baseline (Williams 1992; the
episode's only reward is the architecture's, at the end, so gamma = 1).

    python -m nas_gym.experiments.examples.torchrl_cellnas --episodes 30

Two TorchRL habits to know: ``batch_size`` is a TorchRL keyword of ``GymEnv`` (the env's child
batch size cannot be passed that way: use ``training=`` presets or a ``TrainConfig``), and TorchRL
samples actions from torch's global generator, so the script seeds it (as SB3 does). And importing
``torchrl`` sets the process-wide multiprocessing start method to ``"spawn"``: a gymnasium
``AsyncVectorEnv`` made afterwards starts fresh interpreters, so make its copies with the
``"nas_gym:CellNAS-v0"`` id (the prefix imports nas_gym in each worker).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.envs import GymEnv
from torchrl.modules import MaskedCategorical, ProbabilisticActor

import nas_gym  # noqa: F401  (GymEnv's gym.make would import it from the "nas_gym:" prefix too)


class TokenPolicy(nn.Module):
    """Embeds the tokens so far, an MLP gives the next token's logits; the mask passes through."""

    def __init__(self, max_tokens: int, n_values: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_values, 16)
        self.mlp = nn.Sequential(nn.Flatten(-2), nn.Linear(max_tokens * 16, hidden), nn.Tanh(),
                                 nn.Linear(hidden, n_actions))

    def forward(self, observation: torch.Tensor, action_mask: torch.Tensor):
        return self.mlp(self.embed(observation)), action_mask.bool()


def make_env(seed: int, **env_kwargs: Any) -> GymEnv:
    env = GymEnv("nas_gym:CellNAS-v0", observation="dict", info_keys="fixed",
                 categorical_action_encoding=True, **env_kwargs)
    env.auto_register_info_dict()  # accuracy, penalty, cost_* ... as tensordict entries
    env.set_seed(seed)
    return env


def search(episodes: int = 30, *, seed: int = 0, lr: float = 3e-3, **env_kwargs: Any
           ) -> dict[str, Any]:
    """Run ``episodes`` architectures; returns the best (by reward) and every episode's reward."""
    torch.manual_seed(seed)  # TorchRL samples with torch's global generator
    env = make_env(seed, **env_kwargs)
    obs_spec = env.observation_spec["observation"]
    max_tokens, n_values = obs_spec.shape[-1], int(obs_spec.space.n)
    n_actions = int(env.action_spec.space.n)
    module = TensorDictModule(TokenPolicy(max_tokens, n_values, n_actions),
                              in_keys=["observation", "action_mask"], out_keys=["logits", "mask"])
    actor = ProbabilisticActor(module, in_keys=["logits", "mask"], out_keys=["action"],
                               distribution_class=MaskedCategorical, return_log_prob=False)
    optim = torch.optim.Adam(actor.parameters(), lr=lr)
    baseline, rewards, best = None, [], None
    for episode in range(episodes):
        td = env.rollout(max_steps=max_tokens, policy=actor, break_when_any_done=True)
        ret = float(td["next", "reward"].sum())
        last = td["next"][-1]
        rewards.append(ret)
        if best is None or ret > best["reward"]:
            best = {"episode": episode, "reward": ret, "accuracy": float(last["accuracy"]),
                    "params": int(last["cost_params"]), "penalty": float(last["penalty"]),
                    "tokens": (last["observation"][last["observation"] > 0] - 1).tolist(),
                    "invalid_actions": int(td["next", "invalid_action"].sum())}
        baseline = ret if baseline is None else 0.9 * baseline + 0.1 * ret
        log_prob = actor.get_dist(td).log_prob(td["action"]).sum()
        loss = -(ret - baseline) * log_prob
        optim.zero_grad()
        loss.backward()
        optim.step()
    env.close()
    return {"best": best, "rewards": rewards}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=30_000, help="upper bound on params")
    p.add_argument("--epochs", type=int, default=2, help="child training epochs")
    p.add_argument("--train-size", type=int, default=None, help="cap on training samples")
    p.add_argument("--max-blocks", type=int, default=4)
    p.add_argument("--store", default=":memory:", help="evaluation store (SQLite path)")
    args = p.parse_args(argv)
    result = search(args.episodes, seed=args.seed, budget={"params": args.budget},
                    dataset="digits", epochs=args.epochs, train_size=args.train_size,
                    max_blocks=args.max_blocks, store=args.store, measure_latency=False)
    best = result["best"]
    print(f"torchrl REINFORCE on CellNAS-v0: best reward {best['reward']:.4f} (episode "
          f"{best['episode']}), validation accuracy {best['accuracy']:.4f}, params "
          f"{best['params']:,}, tokens {best['tokens']}")
    return result


if __name__ == "__main__":
    main()
