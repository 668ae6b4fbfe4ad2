"""``nas-gym search --method benas``: the B-ENAS options of the ``search`` parser and the command
that runs :func:`nas_gym.experiments.benas.run_benas` from them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from nas_gym.errors import ConfigError, bad_value

from .benas import run_benas
from .benas_config import SELECT_RULES, BenasConfig

__all__ = ["add_benas_options"]


def add_benas_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--method`` and the B-ENAS options to the ``search`` parser of ``nas_gym.experiments.cli``;
    ``--method benas`` maps the search options (``--env``, ``--budget``, ``--env-kwargs`` and
    shortcuts, ``--agent-kwargs`` -> controller, ``--seed``, ``--final-epochs``, ``--out``,
    ``--threads``) onto :class:`BenasConfig`."""
    parser.add_argument("--method", choices=("agent", "benas"), default="agent",
                        help="agent: run --agent on --env (default); benas: the B-ENAS pipeline "
                             "on shared weights (experiments/benas.py)")
    group = parser.add_argument_group("B-ENAS (--method benas)")
    group.add_argument("--benas-epochs", type=int, default=10, help="e, epochs (paper: 150)")
    group.add_argument("--child-steps", type=int, default=None,
                       help="b, TrainChild mini-batches per epoch (default 2|D|/batch)")
    group.add_argument("--controller-steps", type=int, default=30, help="s (paper: 30)")
    group.add_argument("--benas-batch-size", type=int, default=160, help="mini-batch (160)")
    group.add_argument("--select", choices=SELECT_RULES, default="accuracy_x_cost",
                       help="SelectCell rule (default: the paper's accuracy x cost)")
    group.add_argument("--final-n", type=int, default=3, help="N of the final model (3)")
    group.add_argument("--final-channels", type=int, default=None,
                       help="first-stage width of the final model (default: the search width)")
    group.add_argument("--final-drop-path", type=float, default=0.0,
                       help="ScheduledDropPath of the final retraining (NASNet; default 0: off)")
    group.add_argument("--final-budget", default=None, metavar="METRIC=UPPER[,...]",
                       help="budget of the final model; the searched cell's budget is derived "
                            "from it (B-ENAS §4.1; replaces --budget)")
    parser.set_defaults(func=partial(_dispatch, fallback=parser.get_default("func")))


def _dispatch(args: argparse.Namespace, fallback: Callable[[argparse.Namespace], int]) -> int:
    if getattr(args, "method", "agent") != "benas":
        return fallback(args)
    from .cli import search_config  # the search options, resolved as for --method agent

    sc = search_config(args)
    if sc.agent != "reinforce":
        raise bad_value("--agent", sc.agent, "'reinforce' (B-ENAS's controller) with --method benas")
    if sc.workers != 1 or sc.backend not in ("auto", "local"):
        raise bad_value("--workers / --backend", (sc.workers, sc.backend),
                        "1 / local with --method benas (one super-network, in this process)")
    torch.set_num_threads(sc.threads)
    final_budget = None
    if args.final_budget is not None:
        from .cli import parse_budget as parse_budget_text

        try:
            final_budget = parse_budget_text(args.final_budget)
        except ValueError:
            raise bad_value("--final-budget", args.final_budget,
                            "metric=upper[,metric=upper...] over params, flops, memory_bytes") \
                from None
    config = BenasConfig(env=sc.env, budget=sc.budget, epochs=args.benas_epochs,
                         child_steps=args.child_steps, controller_steps=args.controller_steps,
                         batch_size=args.benas_batch_size, select=args.select,
                         final_n=args.final_n, final_epochs=sc.final_epochs,
                         final_channels=args.final_channels, final_budget=final_budget,
                         final_drop_path=args.final_drop_path,
                         env_kwargs=dict(sc.env_kwargs), controller_kwargs=dict(sc.agent_kwargs),
                         seed=sc.seed, out=sc.out)
    try:
        report = run_benas(config)
    except TypeError as exc:  # an unknown env keyword
        raise ConfigError(f"--env-kwargs: {sc.env} does not accept one of "
                          f"{sorted(sc.env_kwargs)} ({exc})") from None
    sel = report["selected"]
    if report["budget_derivation"]:
        print(f"cell budget {config.budget} = final budget "
              f"{report['budget_derivation']['final_budget']} / the median final/search cost "
              f"ratio {report['budget_derivation']['ratio']}")
    print(f"B-ENAS: {config.epochs} epochs in {report['search_seconds']:.1f}s, super-network "
          f"{report['supernet']['params']:,} params; selected ({sel['rule']}): shared-weight "
          f"accuracy {sel['accuracy']:.4f}, {sel['metric']} {sel['cost']:,.6g}, "
          f"feasible {sel['feasible']}")
    final = report.get("final")
    if final:
        c = final["costs"]
        print(f"final N={config.final_n}: test accuracy {final['test_accuracy']:.4f}, params "
              f"{int(c['params']):,}, train_seconds {c['train_seconds']:.1f}")
    print(f"report: {Path(sc.out) / 'benas.json'}")
    return 0
