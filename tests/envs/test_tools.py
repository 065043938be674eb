"""Tools: registry, schema checks, errors as observations, untrusted tools killed at their time limit."""

from __future__ import annotations

import time

import pytest

from steprl.envs.tools import (
    Tool,
    ToolError,
    ToolTimeout,
    check_arguments,
    get_tool,
    run_tool,
    run_with_timeout,
    tool_names,
)


def test_registry_holds_builtin_tools() -> None:
    assert {"calc", "lookup", "guess"} <= set(tool_names())
    calc = get_tool("calc")
    assert calc is not None and calc.params == ("expression",)
    assert calc.spec()["parameters"]["required"] == ["expression"]
    assert get_tool("nope") is None


def test_lookup_and_guess_results() -> None:
    lookup, guess = get_tool("lookup"), get_tool("guess")
    assert lookup is not None and guess is not None
    ctx = {"table": {"ab.city": "zuto"}}
    assert run_tool(lookup, {"key": " ab.city "}, ctx).text == "zuto"
    miss = run_tool(lookup, {"key": "zz.city"}, ctx)
    assert miss.error and miss.text == "error: no such key: zz.city"
    assert [run_tool(guess, {"number": n}, {"secret": 40}).text for n in (10, "40", 90)] == [
        "higher",
        "correct",
        "lower",
    ]
    bad = run_tool(guess, {"number": "4x"}, {"secret": 40})
    assert bad.error and "must be an integer" in bad.text
    assert run_tool(guess, {"number": True}, {"secret": 1}).error


def test_check_arguments() -> None:
    guess = get_tool("guess")
    assert guess is not None
    assert check_arguments(guess, {"number": "-7"}) == {"number": -7}
    with pytest.raises(ToolError, match="missing argument 'number'"):
        check_arguments(guess, {})
    with pytest.raises(ToolError, match="unknown argument"):
        check_arguments(guess, {"number": 1, "extra": 2})
    with pytest.raises(ToolError, match="must be an object"):
        check_arguments(guess, [1])  # type: ignore[arg-type]


def _boom(args: object, ctx: object) -> str:
    raise RuntimeError("secret internals")


def test_buggy_tool_is_an_error_observation() -> None:
    tool = Tool("boom", "raises", {"properties": {}}, _boom)
    res = run_tool(tool, {})
    assert res.error and res.text == "error: RuntimeError"


def test_output_is_ascii_and_capped() -> None:
    tool = Tool("big", "big output", {"properties": {}}, lambda a, c: "\u00e9" * 10_000, max_output_chars=50)
    res = run_tool(tool, {})
    assert not res.error and len(res.text) == 50 and res.text.isascii() and res.text.endswith("...[truncated]")


def test_hanging_callable_is_killed_within_limit() -> None:
    t0 = time.monotonic()
    ok, text = run_with_timeout(time.sleep, (60,), time_limit_s=0.5)
    elapsed = time.monotonic() - t0
    assert not ok and "time limit exceeded" in text
    assert elapsed < 0.5 + 0.5


def test_c_level_pow_is_killed_within_limit() -> None:
    t0 = time.monotonic()
    ok, text = run_with_timeout(pow, (10, 10**10), time_limit_s=0.5)
    assert not ok
    assert time.monotonic() - t0 < 1.0


def _hang(args: object, ctx: object) -> str:
    while True:
        pass


def test_untrusted_tool_is_killed_and_its_timeout_is_a_fault_not_an_observation() -> None:
    sleeper = Tool("hang", "loops forever", {"properties": {}}, _hang, time_limit_s=0.5, untrusted=True)
    t0 = time.monotonic()
    with pytest.raises(ToolTimeout, match=r"tool hang: time limit exceeded \(0.5 s\)") as err:
        run_tool(sleeper, {})
    assert not isinstance(err.value, ToolError)
    assert time.monotonic() - t0 < 1.0
    wrong = Tool("sleeper", "bad signature", {"properties": {}}, time.sleep, time_limit_s=2.0, untrusted=True)
    res = run_tool(wrong, {})
    assert res.error and "TypeError" in res.text


def test_trusted_tool_past_its_limit_raises_tool_timeout() -> None:
    slow = Tool("slow", "returns late", {"properties": {}}, lambda a, c: time.sleep(0.2) or "late", time_limit_s=0.05)
    with pytest.raises(ToolTimeout, match="tool slow: time limit exceeded"):
        run_tool(slow, {})
    fast = Tool("fast", "returns at once", {"properties": {}}, lambda a, c: "ok", time_limit_s=0.05)
    assert run_tool(fast, {}).text == "ok"


def test_run_with_timeout_returns_result_and_errors() -> None:
    assert run_with_timeout(abs, (-3,), 2.0) == (True, "3")
    ok, text = run_with_timeout(int, ("x",), 2.0)
    assert not ok and text.startswith("ValueError")
    ok, text = run_with_timeout(lambda: 1, (), 2.0)  # not picklable under spawn
    assert not ok
