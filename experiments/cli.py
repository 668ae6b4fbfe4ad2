"""``nas-gym``: the command line (``nas-gym search ...``; ``bench`` and ``table`` plug in the same way).

The options of ``search`` are generated from :class:`nas_gym.experiments.search_config.SearchConfig` (one option
per field, its docstring as help), plus shortcuts into ``env_kwargs`` for the common env arguments
(``--dataset``, ``--epochs``, ...) and ``-E KEY=VALUE`` for any other env keyword. Values are read
in this order, later wins: the config defaults, ``--config FILE`` (YAML or JSON with the same
field names), the options. A bad value prints one line ``nas-gym: error: ...`` and exits with 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from nas_gym.errors import ConfigError, NasGymError, bad_value

from .options import _is_float, parse_budget, parse_mapping, parse_value, tensorboard_dir
from .options import number as _number
from .search import run_search
from .search_config import SearchConfig

__all__ = ["_is_float", "build_parser", "main", "parse_budget", "parse_mapping", "parse_value"]

PROG = "nas-gym"
#: env keywords with their own option (``--batch-size`` -> ``env_kwargs["batch_size"]``).
ENV_SHORTCUTS: dict[str, tuple[Callable[[str], Any], str]] = {
    "dataset": (str, "dataset (digits, synthetic, mnist, fashion_mnist, cifar10, svhn)"),
    "data_root": (str, "folder of the torchvision datasets"),
    "epochs": (int, "child training epochs"),
    "batch_size": (int, "child training batch size"),
    "lr": (float, "child learning rate"),
    "train_size": (int, "cap on training samples (quick runs)"),
    "training": (str, "training preset (digits, enas, benas, eas, epnas, seed001, ...)"),
    "penalty": (str, "cost penalty (benas, epnas, linear, none)"),
    "evaluator": (str, "evaluator (train, ...)"),
    "device": (str, "device of child training (auto, cpu, cuda)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (no usage dump) and exits with 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (the config dataclasses document every field)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body, docs = tree.body[0].body, {}  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def load_config_file(path: str) -> dict[str, Any]:
    """The fields of a YAML / JSON config file (unknown keys are refused)."""
    file = Path(path)
    if not file.is_file():
        raise bad_value("--config", path, "an existing YAML or JSON file")
    try:
        data = json.loads(file.read_text()) if file.suffix == ".json" else \
            yaml.safe_load(file.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config={path!r} cannot be read: {exc}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise bad_value("--config", path, "a file holding a mapping of config fields")
    names = [f.name for f in dataclasses.fields(SearchConfig)]
    for key in data:
        if key not in names:
            raise bad_value(f"--config key in {path}", key, names)
    return data


# -- search -------------------------------------------------------------------------------------
def add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="run a neural architecture search",
                       description="Run an agent on a nas_gym env; every output goes to --out "
                                   "(run again with the same --out to resume).")
    p.add_argument("--config", help="YAML or JSON file with SearchConfig fields")
    docs, defaults = field_docs(SearchConfig), dataclasses.asdict(SearchConfig())
    for f in dataclasses.fields(SearchConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = docs.get(f.name, "").replace("``", "") + f" [default: {defaults[f.name]}]"
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif f.name == "budget":
            p.add_argument(flag, metavar="METRIC=UPPER,...", help=help_ + " Example: "
                           "params=30000,flops=1e6 or params=1000:30000 or none (or the same "
                           "as JSON: '{\"params\": 30000}').")
        elif f.name.endswith("_kwargs"):
            p.add_argument(flag, metavar="JSON|K=V,...", help=help_)
        elif f.name == "tensorboard":
            p.add_argument(flag, metavar="DIR", type=tensorboard_dir, help=help_)
        else:
            p.add_argument(flag, metavar=f.name.upper(), help=help_)
    group = p.add_argument_group("env arguments (shortcuts into --env-kwargs)")
    for name, (_, help_) in ENV_SHORTCUTS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=f"env_{name}",
                           metavar=name.upper(), help=help_)
    group.add_argument("-E", "--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                       help="any env keyword (repeatable), e.g. -E max_blocks=4 -E ops=nasnet")
    p.add_argument("-A", "--agent-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="any agent keyword (repeatable), e.g. -A batch_episodes=8")
    p.set_defaults(func=cmd_search)
    from .benas_cli import add_benas_options  # --method benas: the B-ENAS pipeline

    add_benas_options(p)


def search_config(args: argparse.Namespace) -> SearchConfig:
    """Defaults < ``--config`` < options."""
    values = dataclasses.asdict(SearchConfig())
    if args.config:
        file = load_config_file(args.config)
        for key in ("env_kwargs", "agent_kwargs"):
            if isinstance(file.get(key), dict):
                file[key] = {**values[key], **file[key]}
        values.update(file)
    for f in dataclasses.fields(SearchConfig):
        raw = getattr(args, f.name, None)
        if raw is None:
            continue
        arg = "--" + f.name.replace("_", "-")
        if f.name == "budget":
            values["budget"] = parse_budget(raw)
        elif f.name.endswith("_kwargs"):
            values[f.name] = {**values[f.name], **parse_mapping(raw, arg)}
        elif f.type in ("int", int):
            values[f.name] = _int(raw, arg)
        else:
            values[f.name] = raw
    for item in args.env_kwarg:
        values["env_kwargs"].update(parse_mapping(item, "--env-kwarg"))
    for item in args.agent_kwarg:
        values["agent_kwargs"].update(parse_mapping(item, "--agent-kwarg"))
    for name, (kind, _) in ENV_SHORTCUTS.items():
        raw = getattr(args, f"env_{name}")
        if raw is not None:
            arg = "--" + name.replace("_", "-")
            values["env_kwargs"][name] = _int(raw, arg) if kind is int else \
                _number(raw, arg) if kind is float else raw
    return SearchConfig(**values)


def _int(text: str, arg: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise bad_value(arg, text, "an integer") from None


def cmd_search(args: argparse.Namespace) -> int:
    config = search_config(args)
    result = run_search(config)
    best = result["best"]
    costs = best.get("costs") or {}
    print(f"best: reward {best['reward']:.4f}, validation accuracy {best.get('accuracy', 0):.4f}, "
          f"params {int(costs.get('params', 0)):,} (episode {best['episode']} of "
          f"{result['episodes']})")
    final = result.get("final")
    if final:
        epochs = f"{final['epochs']} epoch{'s' if final['epochs'] != 1 else ''}"
        print(f"final: {epochs} at full size, test accuracy "
              f"{final['test_accuracy']:.4f}, params {final['params']:,} -> "
              f"{Path(config.out) / final['model']}")
    print(f"outputs: {config.out}/ (evaluations.jsonl, best.json, config.json, *.png)")
    return 0


# -- entry point ----------------------------------------------------------------------------------
#: Subcommands: name -> function adding its parser (``bench`` and ``table`` register here).
from .bench import add_bench_command  # noqa: E402
from .export_cmd import add_export_command  # noqa: E402
from .reproduce import add_reproduce_command  # noqa: E402
from .table_build import add_table_command  # noqa: E402

COMMANDS: dict[str, Callable[[Any], None]] = {"search": add_search, "table": add_table_command,
                                              "bench": add_bench_command,
                                              "export": add_export_command,
                                              "reproduce": add_reproduce_command}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Neural architecture search as Gymnasium envs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``nas-gym`` console script: returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (NasGymError, ValueError) as exc:  # a bad value: one clear line, no traceback
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
