"""Paper 000 (Xu et al. 2019, B-ENAS): cost-constrained cells over three budgets of the final
model's parameters (Table 4, memory consumption; Figs. 6-7). Config:
``experiments/configs/reproduce-benas.yaml``.

Every (budget, seed) pair is one :func:`nas_gym.experiments.benas.run_benas`: the cell's budget derived
from the final model's (§4.1), Algorithm 1 on shared weights, SelectCell by accuracy x cost
(Algorithm 4) and the N = 3 final model retrained from scratch (test split read once). The claims
are checked on what those runs report: the final model's params against its budget, and, over the
budgets, the mean (over seeds) complexity of the cells and test accuracy of the final models.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from ..benas import run_benas
from ..benas_config import BenasConfig
from ._cell import cell_complexity, clock, shrink

#: B-ENAS's rows of Tables 3-5 (CIFAR-10): (cost, accuracy %), in the paper's order.
BENAS_PAPER = {
    "Table 3 (FLOPs, millions)": [(1040, 95.97), (736, 96.32), (658, 95.85), (539, 95.85)],
    "Table 4 (parameters, millions)": [(3.36, 96.02), (2.38, 95.78), (2.00, 95.93), (1.96, 95.86)],
    "Table 5 (training time, hours)": [(92.8, 96.06), (65.9, 95.86), (57.2, 95.33),
                                       (36.1, 95.49)],
}
#: Budget metric of the final models (the paper's Table 4 / Figs. 6-7 measure parameters).
METRIC = "params"


def run(config: dict[str, Any], out: Path, tiny: bool) -> str:
    """B-ENAS's claims: every final cell meets its budget; over three budgets, larger budgets give
    more complex cells and higher accuracy."""
    torch.set_num_threads(int(config.get("threads", 1)))
    base = shrink(config["benas"], tiny)
    if tiny:  # a smaller Omega and budget probe too
        base["budget_samples"] = 4
        base["env_kwargs"]["max_blocks"] = 3
    seeds = config["seeds"][:1] if tiny else config["seeds"]
    runs = []
    for budget in config["final_budgets"]:
        for seed in seeds:
            folder = out / f"{METRIC}{int(budget)}-seed{seed}"
            with clock() as cost:
                result = run_benas(BenasConfig(**{**base, "final_budget": {METRIC: budget},
                                                  "seed": seed, "out": str(folder)}))
            runs.append(summarise(result, budget, seed, cost))
    (out / "benas_runs.json").write_text(json.dumps(runs, indent=2) + "\n")
    plot(runs, out / "benas_budgets.png")
    return report(runs, out, tiny, base)


def summarise(result: dict[str, Any], budget: float, seed: int,
              cost: dict[str, float]) -> dict[str, Any]:
    """One run's figures: budgets, the selected cell, the final model."""
    final, selected = result["final"], result["selected"]
    return {"final_budget": budget, "seed": seed,
            "cell_budget": result["config"]["budget"][METRIC],
            "cell_cost": selected["cost"], "cell_feasible": selected["feasible"],
            "shared_accuracy": selected["accuracy"],
            "final_params": int(final["costs"]["params"]),
            "final_flops": float(final["costs"]["flops"]),
            "test_accuracy": final["test_accuracy"], "val_accuracy": final["val_accuracy"],
            **cell_complexity(selected["architecture"]),
            "architecture": selected["architecture"], **cost}


def by_budget(runs: list[dict[str, Any]]) -> dict[float, dict[str, float]]:
    """Mean figures per final budget (over seeds), budgets ascending."""
    keys = ("final_params", "final_flops", "blocks", "weighted_ops", "test_accuracy")
    groups: dict[float, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["final_budget"], []).append(r)
    return {b: {k: statistics.fmean(r[k] for r in rs) for k in keys} | {"n": len(rs)}
            for b, rs in sorted(groups.items())}


def increasing(values: list[float]) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def claims(runs: list[dict[str, Any]]) -> list[tuple[bool, str]]:
    """(holds, text) per claim, with the measured figures."""
    means = by_budget(runs)
    over = [r for r in runs if not (r["cell_feasible"] and r["final_params"] <= r["final_budget"])]
    params = [m["final_params"] for m in means.values()]
    ops = [m["weighted_ops"] for m in means.values()]
    acc = [m["test_accuracy"] for m in means.values()]
    budgets = ", ".join(f"{b:,.0f}" for b in means)
    return [
        (not over, f"every final cell meets its budget (cell <= derived cell budget and final "
                   f"N = 3 model <= final budget): {len(runs) - len(over)} of {len(runs)} runs"
                   + "".join(f"; budget {r['final_budget']:,.0f} seed {r['seed']}: final "
                             f"{r['final_params']:,} params, cell feasible {r['cell_feasible']}"
                             for r in over)),
        (increasing(params), f"larger budgets give more complex cells (mean final params over "
                             f"budgets {budgets}: {', '.join(f'{p:,.0f}' for p in params)}; mean "
                             f"weighted ops: {', '.join(f'{o:.1f}' for o in ops)})"),
        (increasing(acc), f"larger budgets give higher accuracy (mean test accuracy over budgets "
                          f"{budgets}: {', '.join(f'{a:.4f}' for a in acc)})"),
    ]


def report(runs: list[dict[str, Any]], out: Path, tiny: bool, base: dict[str, Any]) -> str:
    lines = [
        "# Reproducing paper 000 (B-ENAS): cost-constrained cells over three budgets", "",
        f"Command: `nas-gym reproduce benas --out {out}{' --tiny' if tiny else ''}` (config "
        f"`experiments/configs/reproduce-benas.yaml`"
        f"{'; tiny smoke run: not evidence' if tiny else ''}). Each run: {base['epochs']} "
        f"epochs of Algorithm 1 (paper: 150), SelectCell by "
        f"{base['select']} over {base['select_samples']} cells, the N = {base['final_n']} model "
        f"retrained {base['final_epochs']} epochs; dataset {base['env_kwargs'].get('dataset')}.",
        "", "Paper figures (CIFAR-10, B-ENAS rows; cost, accuracy %):", ""]
    for table, rows in BENAS_PAPER.items():
        lines.append(f"- {table}: " + "; ".join(f"{c} -> {a}" for c, a in rows))
    lines += ["", "Figs. 6-7: the cell of the 1.96M-parameter model is simple, the 3.36M one's "
              "more complicated; §5: \"The accuracy of our method does not increase monotonously "
              "with the increased cost\".", "", "Measured, per run:", "",
              "| final budget (params) | seed | cell budget | cell params | final params | "
              "final MFLOPs | blocks | weighted ops | shared acc | test acc | CPU s | wall s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['final_budget']:,.0f} | {r['seed']} | {r['cell_budget']:,.0f} | "
            f"{r['cell_cost']:,.0f} | {r['final_params']:,} | {r['final_flops'] / 1e6:.2f} | "
            f"{r['blocks']} | {r['weighted_ops']} | {r['shared_accuracy']:.3f} | "
            f"{r['test_accuracy']:.4f} | {r['cpu_s']:.0f} | {r['wall_s']:.0f} |")
    lines += ["", "Mean per budget:", "",
              "| final budget | runs | final params | final MFLOPs | weighted ops | test acc |",
              "|---|---|---|---|---|---|"]
    for b, m in by_budget(runs).items():
        lines.append(f"| {b:,.0f} | {m['n']} | {m['final_params']:,.0f} | "
                     f"{m['final_flops'] / 1e6:.2f} | {m['weighted_ops']:.1f} | "
                     f"{m['test_accuracy']:.4f} |")
    total_cpu, total_wall = sum(r["cpu_s"] for r in runs), sum(r["wall_s"] for r in runs)
    lines += ["", f"Total: {total_cpu:.0f} CPU s, {total_wall:.0f} wall s.", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for ok, text in claims(runs)]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Test accuracy against final-model params, one colour per budget (its line dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, budget in enumerate(sorted({r["final_budget"] for r in runs})):
        rs = [r for r in runs if r["final_budget"] == budget]
        ax.scatter([r["final_params"] for r in rs], [r["test_accuracy"] for r in rs],
                   color=f"C{i}", label=f"budget {budget:,.0f}")
        ax.axvline(budget, color=f"C{i}", linestyle="--", linewidth=1)
    ax.set(xlabel="final model params (N = 3)", ylabel="test accuracy",
           title="B-ENAS: final models per budget")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
