"""Every chart steprl draws, in one place: the run's plots/*.png and the figures of `steprl report`.

One quantity per axis, each axis titled with its unit, x = the stage's step; held-out evaluations (evals.jsonl)
are drawn as points with their 95% interval on the success axis. Several runs (the report's comparison) share
the axes, one colour per run. matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Axis:
    """One panel: the metric keys it draws (one quantity, so one unit), its title and y-axis label."""

    keys: tuple[str, ...]
    title: str
    unit: str
    heldout: bool = False
    """Overlay the held-out success points of evals.jsonl."""
    scale: float = 1.0
    """Values are multiplied by it (bytes -> MB)."""


@dataclass(frozen=True)
class Chart:
    """A figure: its file name in plots/, its title and its panels, stacked."""

    file: str
    title: str
    axes: tuple[Axis, ...]


GUARD_EVENTS = ("guard/nonfinite", "guard/spike_loss", "guard/spike_grad", "guard/rollbacks", "guard/grad_clipped")

CHARTS = (
    Chart("reward.png", "Reward and success", (
        Axis(("reward_mean",), "training reward, mean over the step's episodes", "reward"),
        Axis(("success_rate",), "success: training episodes (line), held-out greedy (points, 95% CI)",
             "fraction of episodes", heldout=True),
    )),
    Chart("kl_entropy.png", "KL, entropy and log-prob gap", (
        Axis(("kl",), "KL (RL: to the behaviour policy; distill: student to teacher)", "nats / token"),
        Axis(("entropy",), "policy entropy", "nats / token"),
        Axis(("logprob_gap",), "log-prob gap, learner vs sampler", "nats / token"),
    )),
    Chart("grad_guards.png", "Gradient norm and guard events", (
        Axis(("grad_norm",), "gradient norm before clipping", "L2 norm"),
        Axis(GUARD_EVENTS, "guard events", "events per step"),
    )),
    Chart("throughput.png", "Throughput and channel bytes", (
        Axis(("tokens_per_s",), "generated tokens per second", "tokens / s"),
        Axis(("step_time_s",), "wall time per step", "s"),
        Axis(("channel/weights_bytes", "channel/trajectory_bytes"), "bytes moved per step", "MB", scale=1e-6),
    )),
)


@dataclass(frozen=True)
class Series:
    """One run's rows of one training stage, with its held-out points; `label` names the run (None: one run)."""

    label: str | None
    rows: Sequence[dict[str, Any]]
    evals: Sequence[dict[str, Any]]


def training_stage(rows: Sequence[dict[str, Any]]) -> str:
    """The step-loop stage of a metrics.jsonl: rl in a run, distill in its distill/ directory."""
    stages = {r.get("stage") for r in rows}
    return "rl" if "rl" in stages or "distill" not in stages else "distill"


def _points(rows: Sequence[dict[str, Any]], stage: str, key: str) -> tuple[list[int], list[float]]:
    last: dict[int, float] = {}
    for r in rows:  # the last row of a step wins (a resumed run re-logs the steps after its checkpoint)
        v = r.get(key)
        if r.get("stage") == stage and isinstance(v, (int, float)) and not isinstance(v, bool):
            last[int(r["step"])] = float(v)
    xs = sorted(last)
    return xs, [last[x] for x in xs]


def draw(chart: Chart, series: Sequence[Series], stage: str) -> Any:
    """The matplotlib Figure of `chart` for `series` on `stage`'s steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(chart.axes)
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.3 * n + 0.6), sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, spec in zip(axes[:, 0], chart.axes):
        drawn, zeros = False, False
        for si, s in enumerate(series):
            for ki, key in enumerate(spec.keys):
                xs, ys = _points(s.rows, stage, key)
                if not xs or (len(spec.keys) > 1 and not any(ys)):  # an event type that never fired: no line
                    zeros |= bool(xs)
                    continue
                name = " / ".join(p for p in (s.label, key if len(spec.keys) > 1 else None) if p) or key
                colour = colours[(si * len(spec.keys) + ki) % len(colours)]
                ax.plot(xs, [y * spec.scale for y in ys], color=colour, marker="." if len(xs) < 60 else None,
                        label=name, linewidth=1.2)
                drawn = True
            if spec.heldout:
                drawn |= _heldout(ax, s, stage, colours, si)
        ax.set_title(spec.title, fontsize=9, loc="left")
        ax.set_ylabel(spec.unit, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
        if spec.heldout:
            ax.set_ylim(-0.03, 1.03)
        if not drawn:
            empty = "0 at every step" if zeros else "none recorded" if len(spec.keys) > 1 else f"no {spec.keys[0]}"
            ax.text(0.5, 0.5, empty,
                    ha="center", va="center", transform=ax.transAxes, fontsize=8, color="grey")
        elif len(series) > 1 or len(spec.keys) > 1 or spec.heldout:
            ax.legend(fontsize=7, loc="best")
    from matplotlib.ticker import MaxNLocator

    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel(f"{stage} step", fontsize=8)
    fig.suptitle(chart.title, fontsize=11)
    fig.tight_layout()
    return fig


def _heldout(ax: Any, s: Series, stage: str, colours: list[str], si: int) -> bool:
    """Held-out success points of `stage` with their 95% interval as error bars; whether any was drawn."""
    pts = [e for e in s.evals if e.get("stage") == stage]
    for pi, policy in enumerate(sorted({e["policy"] for e in pts})):
        mine = sorted((e for e in pts if e["policy"] == policy), key=lambda e: e["step"])
        xs = [e["step"] for e in mine]
        ys = [e["success"] for e in mine]
        err = [[y - e["ci_low"] for y, e in zip(ys, mine)], [e["ci_high"] - y for y, e in zip(ys, mine)]]
        name = " / ".join(p for p in (s.label, f"held-out: {policy}") if p)
        ax.errorbar(xs, ys, yerr=err, fmt="D", markersize=6, capsize=4, color=colours[(si + pi + 3) % len(colours)],
                    label=name, zorder=5)
    return bool(pts)


def png(fig: Any, dpi: int = 90) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def write_pngs(rows: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """plots/<chart>.png for one run directory's rows; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = training_stage(rows)
    written = []
    for chart in CHARTS:
        path = out_dir / chart.file
        path.write_bytes(png(draw(chart, [Series(None, rows, evals)], stage)))
        written.append(path)
    return written
