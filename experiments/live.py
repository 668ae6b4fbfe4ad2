"""Watching a search live in TensorBoard (``nas-gym search --tensorboard DIR``; ``bench`` too).

Following SB3's ``tensorboard_log=`` convention, one TensorBoard run per search, written as the
evaluations finish (step = evaluation number, 1-based):

- scalars ``eval/reward``, ``eval/accuracy`` (validation), ``eval/penalty``, ``cost/<metric>``
  for each cost, ``best/reward`` and ``best/accuracy`` (the best-reward architecture so far);
- the accuracy-vs-cost scatter with the Pareto front and the budget line as the image
  ``pareto/<metric>`` every ``image_every`` evaluations and at the end;
- the resolved config as hparams (with the final best reward and accuracy as metrics);
- SB3 agents log their training curves (``train/...``, ``rollout/...``) into the same folder.

Start ``tensorboard --logdir DIR`` to watch. Needs the ``tensorboard`` package (an optional extra:
``pip install nas_gym[tensorboard]``); the CLI refuses the option at parsing without it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from nas_gym.rewards import parse_budget


class TensorBoardLog:
    """Writes the evaluations of one search to a TensorBoard run in ``logdir``.

    :param budget: the search's budget (the scatter's budget line).
    :param hparams: the resolved config, logged as hparams at :meth:`close`.
    :param start: rows already logged by an earlier run of the same search (a resume): they set
        the best so far and the scatter, and are not logged again.
    :param image_every: evaluations between two scatter images.
    """

    def __init__(self, logdir: str, *, budget: Any = None, default_metric: str = "params",
                 hparams: dict[str, Any] | None = None, start: list[dict[str, Any]] | None = None,
                 image_every: int = 10) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))
        self.constraints = parse_budget(budget, default_metric)
        self.metrics = list(dict.fromkeys([c.metric for c in self.constraints]
                                          or [default_metric]))
        self.hparams = dict(hparams or {})
        self.rows: list[dict[str, Any]] = list(start or [])
        self.best = max(self.rows, key=lambda r: r["reward"]) if self.rows else None
        self.image_every = max(1, int(image_every))

    def log(self, row: dict[str, Any]) -> None:
        """One finished evaluation (a line of ``evaluations.jsonl``)."""
        self.rows.append(row)
        step = len(self.rows)
        if self.best is None or row["reward"] > self.best["reward"]:
            self.best = row
        scalars = {"eval/reward": row["reward"], "eval/accuracy": row.get("accuracy"),
                   "eval/penalty": row.get("penalty"), "best/reward": self.best["reward"],
                   "best/accuracy": self.best.get("accuracy")}
        scalars.update({f"cost/{k}": v for k, v in (row.get("costs") or {}).items()})
        for tag, value in scalars.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, float(value), step)
        if step % self.image_every == 0:
            self._images(step)
        self.writer.flush()

    def _images(self, step: int) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plots import scatter_figure

        for metric in self.metrics:
            fig = scatter_figure(self.rows, metric, self.constraints, self.best)
            self.writer.add_figure(f"pareto/{metric}", fig, step, close=True)
            plt.close(fig)

    def close(self) -> None:
        if self.rows and len(self.rows) % self.image_every:
            self._images(len(self.rows))
        flat = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str)
                for k, v in self.hparams.items() if v is not None}
        if self.best is not None:
            self.writer.add_hparams(flat, {"hparam/best_reward": float(self.best["reward"]),
                                           "hparam/best_accuracy":
                                               float(self.best.get("accuracy") or 0.0)},
                                    run_name=".")
        self.writer.close()


def plot_event_file(logdir: str, path: str) -> str:
    """A PNG of what a TensorBoard run holds, read back from its event files: the per-evaluation
    reward and best-so-far scalars, and the last accuracy-vs-cost image (the README's picture of a
    real run: ``python -m nas_gym.experiments.live LOGDIR OUT.png``)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    images = [t for t in acc.Tags()["images"] if t.startswith("pareto/")]
    fig, axes = plt.subplots(1, 2 if images else 1, figsize=(12 if images else 6, 4.2),
                             squeeze=False)
    ax = axes[0][0]
    for tag, style in (("eval/reward", dict(marker=".", linestyle="none", alpha=0.5)),
                       ("eval/accuracy", dict(marker=".", linestyle="none", alpha=0.5)),
                       ("best/reward", dict(linewidth=2)), ("best/accuracy", dict(linewidth=2))):
        if tag in acc.Tags()["scalars"]:
            events = acc.Scalars(tag)
            ax.plot([e.step for e in events], [e.value for e in events], label=tag, **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="evaluation", title="TensorBoard scalars (read back from the event file)")
    ax.legend(fontsize=8, loc="lower right")
    if images:
        event = acc.Images(images[0])[-1]
        axes[0][1].imshow(plt.imread(io.BytesIO(event.encoded_image_string), format="png"))
        axes[0][1].set_axis_off()
        axes[0][1].set_title(f"{images[0]} at evaluation {event.step}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    import sys

    print(plot_event_file(sys.argv[1], sys.argv[2]))
