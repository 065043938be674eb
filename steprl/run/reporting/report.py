"""`steprl report RUN [RUN ...]`: one self-contained HTML page (inline CSS and base64 PNGs; no script, no
network) of one run, or of several side by side.

Sections: the curves (steprl/run/reporting/plots.py: reward and success with the held-out points and their 95%
intervals, KL, entropy and log-prob gap, gradient norm and guard events, throughput and channel bytes; distillation's
too), the stage table, the side-by-side held-out table, an episode browser (per step the best, median and worst episode,
agent turns, tool calls, tool results and rewards marked) and each run's machine, topology and config.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from steprl.run.reporting.plots import CHARTS, Series, draw, png
from steprl.run.reporting.report_data import RunRecord, StepEpisodes

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 16px 48px;color:#1d232a}
h1{font-size:22px;margin:20px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:16px 0 6px}table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}th{background:#f3f5f7}
td.l,th.l{text-align:left}.charts{display:grid;grid-template-columns:1fr 1fr;gap:8px}
img.chart{width:100%;border:1px solid #e5e8eb}
details{margin:4px 0}summary{cursor:pointer}pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
.ep{border:1px solid #d0d7de;border-radius:6px;margin:8px 0;padding:6px 10px}
.ep h4{margin:2px 0 6px;font-size:13px}.seg{white-space:pre-wrap;font:12px/1.4 ui-monospace,monospace;
padding:3px 6px;margin:2px 0;border-left:4px solid #aab4be;background:#f6f8fa}
.seg.agent{border-left-color:#2da44e;background:#eefbf1}.call{background:#fff1c2;font-weight:600}
.result{background:#dbeafe}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
.muted{color:#57606a}nav a{margin-right:12px}
"""

NL = "\n"
ORDER = ("warmup", "rl", "distill", "eval")
"""Stages in pipeline order (summary.json keeps them sorted by name)."""
CALL = re.compile(r"(<call>.*?</call>|<tool_call>.*?</tool_call>|\{\"name\".*\})", re.S)
RESULT = re.compile(r"(<result>.*?</result>|<tool_response>.*?</tool_response>)", re.S)


def _e(x: object) -> str:
    return html.escape(str(x))


def _img(fig: object, alt: str) -> str:
    data = base64.b64encode(png(fig)).decode()
    return f'<img class="chart" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: object, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return _e(v)


def _ci(ci: object) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""


def _charts(runs: Sequence[RunRecord], stage: str) -> str:
    multi = len(runs) > 1
    series = [Series(r.name if multi else None, r.rows, r.evals) for r in runs]
    return '<div class="charts">' + "".join(_img(draw(c, series, stage), c.title) for c in CHARTS) + "</div>"


def _stage_table(runs: Sequence[RunRecord]) -> str:
    head = ("<tr><th class=l>run</th><th class=l>stage</th><th>steps</th><th>wall s</th><th>held-out success</th>"
            "<th>95% CI</th><th>skipped steps</th></tr>")
    body = []
    for r in runs:
        stages = r.summary.get("stages", {})
        for name, s in sorted(stages.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)):
            body.append(f"<tr><td class=l>{_e(r.name)}</td><td class=l>{_e(name)}</td><td>{_fmt(s.get('steps'))}</td>"
                        f"<td>{_fmt(s.get('wall_s'), 1)}</td><td>{_fmt(s.get('success'))}</td>"
                        f"<td>{_ci(s.get('success_ci'))}</td><td>{_fmt(s.get('skipped_steps'))}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>" if body else "<p class=muted>no stage has finished</p>"


def _eval_table(runs: Sequence[RunRecord]) -> str:
    cols = [("success", 3), ("reward_mean", 3), ("turns_mean", 2), ("tool_calls_mean", 2), ("malformed_rate", 3),
            ("params", 0), ("tokens_per_s", 0), ("wall_s", 2)]
    head = ("<tr><th class=l>run</th><th class=l>policy</th><th>success</th><th>95% CI</th><th>reward</th>"
            "<th>turns</th><th>tool calls</th><th>malformed</th><th>params</th><th>tok/s</th><th>wall s</th></tr>")
    body = []
    for r in runs:
        for p in r.summary.get("stages", {}).get("eval", {}).get("policies", []):
            cells = [_fmt(p.get(k), d) if d else _fmt(int(p.get(k) or 0)) for k, d in cols]
            body.append(f"<tr><td class=l>{_e(r.name)}</td><td class=l>{_e(p.get('policy'))}</td><td>{cells[0]}</td>"
                        f"<td>{_ci(p.get('success_ci'))}</td>" + "".join(f"<td>{c}</td>" for c in cells[1:]) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>" if body else "<p class=muted>no eval stage in these runs</p>"


def _marked(text: str, role: str) -> str:
    """Escaped segment text with tool calls (agent) or tool results (env) highlighted."""
    pattern, cls = (CALL, "call") if role == "agent" else (RESULT, "result")
    out, pos = [], 0
    for m in pattern.finditer(text):
        out.append(_e(text[pos:m.start()]) + f'<span class="{cls}">{_e(m.group(0))}</span>')
        pos = m.end()
    return "".join(out) + _e(text[pos:])


def _step_block(s: StepEpisodes) -> str:
    eps = []
    for ep in s.episodes:
        verdict = '<span class="ok">success</span>' if ep.success else '<span class="bad">failure</span>'
        segs = "".join(f'<div class="seg {seg.role}" title="{seg.role}">{_marked(seg.text.strip(NL), seg.role)}</div>'
                       for seg in ep.segments)
        err = f"<div class=bad>error: {_e(ep.error)}</div>" if ep.error else ""
        eps.append(f'<div class="ep"><h4>{_e(ep.label)}: episode {ep.index}, reward <b>{ep.reward:.3f}</b>, {verdict}, '
                   f'{ep.tool_calls} tool call(s) <span class=muted>digest {_e(ep.digest[:12])}</span></h4>'
                   f"{segs}{err}</div>")
    return (f"<details><summary>step {s.step}: mean reward {s.reward_mean:.3f}</summary>{''.join(eps)}</details>")


def _browser(r: RunRecord) -> str:
    if not r.steps:
        return "<p class=muted>no readable rollout records (or no checkpoint with a tokenizer)</p>"
    return ("<p class=muted>Green: the policy's own tokens, tool calls in yellow; grey: the task and the "
            "environment's replies, tool results in blue.</p>" + "".join(_step_block(s) for s in r.steps))


def _about(r: RunRecord) -> str:
    import json

    parts = [("machine (machine.json)", json.dumps(r.machine, indent=1, sort_keys=True)),
             ("topology (topology.json)", json.dumps(r.topology, indent=1, sort_keys=True)),
             ("config (config.yaml)", r.config_text)]
    return "".join(f"<details><summary>{_e(t)}</summary><pre>{_e(body)}</pre></details>" for t, body in parts)


def render(runs: Sequence[RunRecord]) -> str:
    """The report page of `runs` (one, or several compared) as HTML text."""
    title = "steprl report: " + ", ".join(r.name for r in runs)
    runs_list = "".join(f"<li><b>{_e(r.name)}</b> <span class=muted>{_e(r.path)}</span>: "
                        + (f"{r.summary['wall_s']:.0f} s" if isinstance(r.summary.get("wall_s"), (int, float))
                           else "not finished")
                        + f", stages done: {_e(', '.join(r.summary.get('completed', [])) or 'none')}</li>"
                        for r in runs)
    distills = [r.distill for r in runs if r.distill is not None and r.distill.rows]
    parts = [f"<h1>{_e(title)}</h1><ul>{runs_list}</ul>",
             '<nav><a href="#curves">curves</a><a href="#stages">stages</a><a href="#eval">held-out</a>'
             '<a href="#episodes">episodes</a><a href="#about">machine and config</a></nav>',
             '<h2 id="curves">Curves (RL)</h2>', _charts(runs, "rl")]
    if distills:
        parts += ['<h2 id="curves-distill">Curves (distillation)</h2>', _charts(distills, "distill")]
    parts += ['<h2 id="stages">Stages</h2>', _stage_table(runs),
              '<h2 id="eval">Held-out evaluation, side by side</h2>', _eval_table(runs),
              '<h2 id="episodes">Episodes</h2>']
    for r in runs:
        parts += [f"<h3>{_e(r.name)}: best, median and worst episode of each RL step</h3>", _browser(r)]
    parts.append('<h2 id="about">Machine, topology and config</h2>')
    for r in runs:
        parts += [f"<h3>{_e(r.name)}</h3>", _about(r)]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{''.join(parts)}</body></html>\n")


def write_report(runs: Sequence[RunRecord], out: Path) -> Path:
    """Write the page to `out` (atomically); returns it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(runs))
    tmp.replace(out)
    return out
