"""plots/*.png: one quantity per axis, each titled with its unit, held-out points with their intervals."""

from __future__ import annotations

from steprl.run.reporting.plots import CHARTS, Series, draw, write_pngs

ROWS = [{"step": s, "stage": "rl", "reward_mean": 0.1 * s, "success_rate": 0.1 * s, "kl": 0.01, "entropy": 2.0,
         "logprob_gap": 1e-7, "grad_norm": 1.0 + s, "guard/spike_grad": float(s == 2), "tokens_per_s": 900.0,
         "step_time_s": 0.5, "channel/weights_bytes": 2e6, "channel/trajectory_bytes": 0.0} for s in range(5)]
EVALS = [{"policy": "warmup", "stage": "rl", "step": 0, "success": 0.05, "ci_low": 0.02, "ci_high": 0.1},
         {"policy": "rl", "stage": "rl", "step": 5, "success": 0.9, "ci_low": 0.85, "ci_high": 0.94},
         {"policy": "student", "stage": "distill", "step": 3, "success": 0.5, "ci_low": 0.4, "ci_high": 0.6}]


def test_every_axis_has_a_title_and_a_unit_and_one_quantity():
    for chart in CHARTS:
        fig = draw(chart, [Series(None, ROWS, EVALS)], "rl")
        for ax, spec in zip(fig.axes, chart.axes):
            assert ax.get_title(loc="left") == spec.title and ax.get_ylabel() == spec.unit
        assert fig.axes[-1].get_xlabel() == "rl step" and fig._suptitle.get_text() == chart.title


def test_held_out_points_are_drawn_with_their_intervals_on_the_success_axis_only():
    fig = draw(CHARTS[0], [Series(None, ROWS, EVALS)], "rl")
    reward_ax, success_ax = fig.axes
    bars = success_ax.containers
    assert len(bars) == 2 and not reward_ax.containers  # warmup and rl; the distill point is on another axis
    points = sorted((tuple(b.lines[0].get_xdata()), tuple(b.lines[0].get_ydata())) for b in bars)
    assert points == [((0,), (0.05,)), ((5,), (0.9,))]
    caps = sorted(round(float(y), 3) for b in bars for cap in b.lines[1] for y in cap.get_ydata())
    assert caps == [0.02, 0.1, 0.85, 0.94]
    labels = [t.get_text() for t in success_ax.get_legend().get_texts()]
    assert "held-out: rl" in labels and "held-out: warmup" in labels


def test_guard_events_draw_only_the_events_that_fired_and_bytes_are_in_megabytes(tmp_path):
    fig = draw(CHARTS[2], [Series(None, ROWS, [])], "rl")
    assert [ln.get_label() for ln in fig.axes[1].get_lines()] == ["guard/spike_grad"]
    fig = draw(CHARTS[3], [Series(None, ROWS, [])], "rl")
    assert list(fig.axes[2].get_lines()[0].get_ydata()) == [2.0] * 5
    written = write_pngs(ROWS, EVALS, tmp_path / "plots")
    assert sorted(p.name for p in written) == sorted(c.file for c in CHARTS)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_checkpoints_redraw_the_plots_only_once_due_and_the_end_always(tmp_path, monkeypatch):
    """plot_if_due (at checkpoints) draws nothing before PLOT_EVERY_S have passed since the last drawing and
    draws once they have; plot() (the end of a run) always draws and restarts the interval."""
    import json

    from steprl.run.reporting import metrics as metrics_mod

    now = [1000.0]
    monkeypatch.setattr(metrics_mod.time, "monotonic", lambda: now[0])
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    logger = metrics_mod.MetricsLogger(tmp_path)
    assert logger.plot_if_due() == [] and not (tmp_path / "plots").exists()
    now[0] += metrics_mod.PLOT_EVERY_S
    drawn = logger.plot_if_due()
    assert sorted(p.name for p in drawn) == sorted(c.file for c in CHARTS) and all(p.is_file() for p in drawn)
    now[0] += metrics_mod.PLOT_EVERY_S / 2
    assert logger.plot_if_due() == []
    assert len(logger.plot()) == len(CHARTS)
    now[0] += metrics_mod.PLOT_EVERY_S * 0.9
    assert logger.plot_if_due() == []


def test_a_run_stopped_by_an_error_still_draws_its_plots(tmp_path, monkeypatch):
    """The warm-up's rows are drawn when the next stage fails, and the stage's own error is what the caller gets."""
    import pytest

    from steprl import pipeline
    from steprl.config import load_config

    def broken_rl(run):
        raise RuntimeError("planted failure in rl")

    monkeypatch.setitem(pipeline.STAGES, "rl", broken_rl)
    cfg = load_config("smoke", [f"run.root={tmp_path}", "run.name=e", "stages=[warmup,rl]", "warmup.steps=2"])
    with pytest.raises(RuntimeError, match="planted failure in rl"):
        pipeline.train(cfg)
    assert sorted(p.name for p in (tmp_path / "e" / "plots").glob("*.png")) == sorted(c.file for c in CHARTS)
