"""calc: hostile inputs are refused fast, valid expressions agree 100% with a Fraction reference."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from steprl.envs.arithmetic import CalcError, calc, evaluate
from steprl.envs.tools import get_tool, run_tool

MALICIOUS = {
    "huge power": "9**9**9**9",
    "huge power 2": "2**99999999",
    "power tower in parens": "(10**4000)**4000",
    "repeated squaring": "((((2**64)**64)**64)**64)",
    "product blow-up": "(10**300)*(10**300)*(10**300)",
    "sum of huge": "(2**1024)+(2**1024)",
    "deep nesting": "(" * 1000 + "1" + ")" * 1000,
    "deep binary nesting": "(" * 40 + "1" + "+1)" * 40,
    "deep unary": "-" * 150 + "1",
    "10k-digit number": "1" * 10_000,
    "10k-digit sum": "1" * 5000 + "+" + "2" * 5000,
    "import": "__import__('os').system('echo pwned')",
    "attribute": "(1).__class__.__bases__",
    "name": "x",
    "builtin name": "open",
    "lambda": "(lambda: 1)()",
    "comprehension": "[i for i in range(10**9)]",
    "generator": "sum(i for i in range(10))",
    "f-string": "f'{1+1}'",
    "subscript": "(1,2)[0]",
    "call": "abs(-1)",
    "string literal": "'a'*10",
    "float": "1.5*2",
    "complex": "1j*1j",
    "comparison": "1<2",
    "boolean ops": "1 and 2",
    "bitwise": "1<<100000",
    "walrus": "(y:=1)",
    "tuple": "1,2",
    "empty": "",
    "whitespace": "   ",
    "division by zero": "1/0",
    "mod by zero": "5%0",
    "floordiv by zero": "5//(3-3)",
    "zero negative power": "0**-1",
    "fractional exponent": "4**(1/2)",
    "unicode digits": "\u0661+\u0662",
    "null byte": "1\x00+1",
    "too many nodes": "+".join(["1"] * 150),
    "syntax": "1+*2",
}


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_malicious_inputs_are_error_observations_fast(name: str) -> None:
    tool = get_tool("calc")
    assert tool is not None
    t0 = time.perf_counter()
    res = run_tool(tool, {"expression": MALICIOUS[name]})
    elapsed = time.perf_counter() - t0
    assert res.error, (name, res.text)
    assert res.text.startswith("error: ")
    assert elapsed < 0.1, (name, elapsed)
    assert res.text.isascii() and len(res.text) <= tool.max_output_chars


def test_malicious_inputs_raise_only_calc_error() -> None:
    for expr in MALICIOUS.values():
        with pytest.raises(CalcError):
            evaluate(expr)


def test_non_string_argument_is_error() -> None:
    tool = get_tool("calc")
    assert tool is not None
    for bad in ({"expression": 12}, {}, {"expr": "1"}, {"expression": "1", "x": 2}, {"expression": None}):
        res = run_tool(tool, bad)
        assert res.error and res.text.startswith("error: "), bad


@pytest.mark.parametrize(
    "expr,out",
    [
        ("12*7", "84"),
        ("1/6+1/3", "1/2"),
        ("-3//2", "-2"),
        ("7%-3", "-2"),
        ("2**-3", "1/8"),
        ("-(2)**2", "-4"),
        ("(-2)**3", "-8"),
        ("10/4", "5/2"),
        ("-10/4", "-5/2"),
        ("1_000+1", "1001"),
        ("2**1000 - 2**1000", "0"),
        ("(" * 90 + "1" + ")" * 90, "1"),
        (" 3 * ( 4 + 5 ) ", "27"),
        ("+5", "5"),
        ("7/7", "1"),
    ],
)
def test_known_values(expr: str, out: str) -> None:
    assert calc(expr) == out


def _reference(rng: np.random.Generator, depth: int) -> tuple[str, Fraction]:
    """A random expression and its value computed with Fraction directly (no parser involved)."""
    if depth == 0 or rng.random() < 0.25:
        v = int(rng.integers(0, 10 ** int(rng.integers(1, 7))))
        return str(v), Fraction(v)
    kind = rng.random()
    if kind < 0.1:
        s, v = _reference(rng, depth - 1)
        return f"-({s})", -v
    a_s, a = _reference(rng, depth - 1)
    b_s, b = _reference(rng, depth - 1)
    op = ["+", "-", "*", "/", "//", "%", "**"][int(rng.integers(7))]
    if op in ("/", "//", "%") and b == 0:
        b_s, b = "7", Fraction(7)
    if op == "**":
        e = int(rng.integers(-3, 4))
        if a == 0 and e < 0:
            e = 2
        b_s, b = (f"({e})" if e < 0 else str(e)), Fraction(e)
    apply = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
             "//": lambda: Fraction(a // b), "%": lambda: a % b, "**": lambda: a ** int(b)}
    val = apply[op]()
    return f"({a_s}){op}({b_s})", val


def test_fraction_reference_agreement() -> None:
    rng = np.random.default_rng(1234)
    agree = checked = 0
    for _ in range(2000):
        expr, value = _reference(rng, 3)
        if len(expr) > 200 or max(value.numerator.bit_length(), value.denominator.bit_length()) > 600:
            continue
        checked += 1
        expected = str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
        agree += calc(expr) == expected
    assert checked > 1000
    assert agree == checked


def test_big_results_within_limit_are_exact() -> None:
    assert calc("2**1000") == str(2**1000)
    with pytest.raises(CalcError, match="too large"):
        calc("2**1025")
    with pytest.raises(CalcError, match="too large"):
        calc("(2**1000)*(2**1000)")
