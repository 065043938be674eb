"""Benchmark: what an ecosystem adapter adds to an env step, against steprl's own envs and tools in one process.

Each row times the env alone (no model): a fixed script of agent turns played `--episodes` times, reported as
milliseconds per agent turn (median episode). Rows, same machine, same command:

- `steprl Guess-v0`: steprl's own guessing env (guess tool) -- the baseline for the OpenEnv rows;
- `OpenEnv in-process`, `OpenEnv local server`: examples/ecosystem/guess_game.py through steprl/OpenEnv-v0
  (direct calls; OpenEnv's FastAPI server over its WebSocket client);
- `QA calc tool`, `QA MCP tool (stdio)`: one tool call and one answer on steprl/QA-v0 with the built-in `calc`
  tool vs the fastmcp server examples/ecosystem/units_server.py;
- `verifiers episode`: examples/ecosystem/sums_tasks.py through steprl/Verifiers-v0 (a wrong answer, the env's
  second try, the right answer: verifiers' interception, scoring and steprl's endpoint per turn).

    python bench/ecosystem.py [--episodes 50]

Needs the extras openenv, mcp, verifiers (and fastmcp). Writes bench/results/ecosystem.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
from _common import machine_meta, markdown_table, write_result

import steprl.envs  # noqa: F401

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "ecosystem"


def timed(env, script, seeds) -> float:
    """Median milliseconds per agent turn over episodes: reset(seed), then each turn `script(obs)` gives."""
    per_turn = []
    for seed in seeds:
        start = time.perf_counter()
        obs, _ = env.reset(seed=seed)
        turns, done = 0, False
        for action in script(obs):
            obs, _, term, trunc, _ = env.step(action)
            turns += 1
            done = term or trunc
            if done:
                break
        per_turn.append((time.perf_counter() - start) * 1e3 / max(turns, 1))
    return statistics.median(per_turn)


def guesses(obs):
    """Always the same three guesses (a fixed script: the cost, not the skill)."""
    return ["<answer>4</answer>", "<answer>2</answer>", "<answer>6</answer>"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=50)
    args = ap.parse_args()
    sys.path.insert(0, str(EXAMPLES))
    seeds = list(range(args.episodes))
    rows = []

    native = gym.make("steprl/Guess-v0", high=8, max_turns=3)
    rows.append({"env": "steprl Guess-v0", "ms": timed(native, lambda o: [
        '<tool_call>{"name": "guess", "arguments": {"number": 4}}</tool_call>',
        '<tool_call>{"name": "guess", "arguments": {"number": 2}}</tool_call>',
        "<answer>6</answer>"], seeds)})
    for serve in ("inprocess", "local"):
        env = gym.make("steprl/OpenEnv-v0", env="guess_game:GuessEnvironment", serve=serve, max_turns=3)
        env.reset(seed=0)  # the server's start is not a per-turn cost
        rows.append({"env": f"OpenEnv {'in-process' if serve == 'inprocess' else 'local server'}",
                     "ms": timed(env, guesses, seeds)})
    qa = {"path": str(EXAMPLES / "sums.jsonl"), "scorer": "numeric", "max_turns": 3}

    def tool_then_answer(call):
        return lambda obs: [call(*obs.split("+")), f"<answer>{sum(int(x) for x in obs.split('+'))}</answer>"]

    calc = gym.make("steprl/QA-v0", tools=["calc"], **qa)
    rows.append({"env": "QA calc tool", "ms": timed(calc, tool_then_answer(
        lambda a, b: f'<tool_call>{{"name": "calc", "arguments": {{"expression": "{a}+{b}"}}}}</tool_call>'), seeds)})
    mcp = gym.make("steprl/QA-v0", tools=[f"mcp:{sys.executable} {EXAMPLES / 'units_server.py'}"], **qa)
    rows.append({"env": "QA MCP tool (stdio)", "ms": timed(mcp, tool_then_answer(
        lambda a, b: f'<tool_call>{{"name": "add", "arguments": {{"a": {a}, "b": {b}}}}}</tool_call>'), seeds)})
    vf = gym.make("steprl/Verifiers-v0", taskset="sums_tasks", max_turns=3)
    rows.append({"env": "verifiers episode", "ms": timed(
        vf, lambda obs: ["<answer>0</answer>", f"<answer>{sum(int(x) for x in obs.split('+'))}</answer>"], seeds)})

    base = {r["env"]: r["ms"] for r in rows}
    for r in rows:
        ref = base["steprl Guess-v0"] if r["env"].startswith(("OpenEnv", "steprl")) else (
            base["QA calc tool"] if r["env"].startswith("QA") else None)
        r["x_baseline"] = r["ms"] / ref if ref else ""
    print(markdown_table(rows, [("env", "env", ""), ("ms", "ms per agent turn", ".3f"),
                                ("x_baseline", "x its baseline", ".1f")]))
    path = write_result("ecosystem", {"machine": machine_meta(1), "episodes": args.episodes, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
