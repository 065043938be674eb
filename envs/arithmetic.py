"""Exact arithmetic on ints and Fractions by walking a whitelisted AST: no eval, bounded time and memory.

The safe evaluator behind the `calc` tool (`envs/tools.py`); the task env that uses it is `envs/calculator.py`.

Limits are checked *before* each operation (operand bit lengths, exponent size), so a
hostile expression such as `9**9**9**9` is refused in microseconds instead of being computed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction


class CalcError(ValueError):
    """An expression was refused or failed; the message is shown to the agent."""


@dataclass(frozen=True)
class CalcLimits:
    """Bounds that make every evaluation cheap."""

    max_chars: int = 200
    max_nodes: int = 100
    max_depth: int = 30
    max_literal_digits: int = 40
    max_bits: int = 1024
    max_exponent: int = 4096


DEFAULT_LIMITS = CalcLimits()

_ALLOWED_CHARS = frozenset("0123456789+-*/%() _")
_BINOPS: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}


def _size(x: Fraction) -> int:
    """Bits needed by the numerator and the denominator, whichever is larger."""
    return max(x.numerator.bit_length(), x.denominator.bit_length())


def _check(x: Fraction, lim: CalcLimits) -> Fraction:
    if _size(x) > lim.max_bits:
        raise CalcError(f"result too large (over {lim.max_bits} bits)")
    return x


def _pow(a: Fraction, b: Fraction, lim: CalcLimits) -> Fraction:
    if b.denominator != 1:
        raise CalcError("exponent must be an integer")
    e = b.numerator
    if abs(e) > lim.max_exponent:
        raise CalcError(f"exponent too large (limit {lim.max_exponent})")
    if a == 0 and e < 0:
        raise CalcError("division by zero")
    # |num| or den >= 2 gains at least (bit_length - 1) bits per factor: refuse before computing
    if _size(a) >= 2 and (_size(a) - 1) * abs(e) > lim.max_bits:
        raise CalcError(f"result too large (over {lim.max_bits} bits)")
    return a**e


def _mul(a: Fraction, b: Fraction, lim: CalcLimits) -> Fraction:
    if _size(a) + _size(b) > 2 * lim.max_bits + 2:
        raise CalcError(f"result too large (over {lim.max_bits} bits)")
    return a * b


def _div(a: Fraction, b: Fraction, lim: CalcLimits) -> Fraction:
    if b == 0:
        raise CalcError("division by zero")
    return a / b


def _floordiv(a: Fraction, b: Fraction, lim: CalcLimits) -> Fraction:
    if b == 0:
        raise CalcError("division by zero")
    return Fraction(a // b)


def _mod(a: Fraction, b: Fraction, lim: CalcLimits) -> Fraction:
    if b == 0:
        raise CalcError("division by zero")
    return a % b


_APPLY: dict[str, Callable[[Fraction, Fraction, CalcLimits], Fraction]] = {
    "+": lambda a, b, lim: operator.add(a, b),
    "-": lambda a, b, lim: operator.sub(a, b),
    "*": _mul,
    "/": _div,
    "//": _floordiv,
    "%": _mod,
    "**": _pow,
}


def _walk(node: ast.AST, depth: int, lim: CalcLimits) -> Fraction:
    if depth > lim.max_depth:
        raise CalcError("expression nested too deeply")
    if isinstance(node, ast.Constant):
        v = node.value
        if type(v) is not int:
            raise CalcError("only integer numbers are allowed")
        return Fraction(v)
    if isinstance(node, ast.UnaryOp):
        x = _walk(node.operand, depth + 1, lim)
        if isinstance(node.op, ast.USub):
            return -x
        if isinstance(node.op, ast.UAdd):
            return x
        raise CalcError("unsupported operator")
    if isinstance(node, ast.BinOp):
        sym = _BINOPS.get(type(node.op))
        if sym is None:
            raise CalcError("unsupported operator")
        a = _walk(node.left, depth + 1, lim)
        b = _walk(node.right, depth + 1, lim)
        return _check(_APPLY[sym](a, b, lim), lim)
    raise CalcError(f"not allowed: {type(node).__name__}")


def format_number(x: Fraction) -> str:
    """An int as digits, any other Fraction as reduced `a/b` (sign on the numerator)."""
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def evaluate(expression: str, limits: CalcLimits = DEFAULT_LIMITS) -> Fraction:
    """Evaluate `expression` exactly; raise CalcError (never anything else) when refused."""
    if not isinstance(expression, str):
        raise CalcError("expression must be a string")
    if len(expression) > limits.max_chars:
        raise CalcError(f"expression too long (limit {limits.max_chars} characters)")
    if not expression.strip():
        raise CalcError("empty expression")
    bad = sorted({ch for ch in expression if ch not in _ALLOWED_CHARS})
    if bad:
        shown = "".join(bad[:5]).encode("ascii", "backslashreplace").decode("ascii")
        raise CalcError(f"invalid characters: {shown}")
    # digit runs are bounded before the parser ever builds an int
    run = 0
    for ch in expression:
        run = run + 1 if ch.isdigit() or (ch == "_" and run) else 0
        if run > limits.max_literal_digits:
            raise CalcError(f"number too long (limit {limits.max_literal_digits} digits)")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalcError("syntax error") from None
    nodes = 0
    for _ in ast.walk(tree):
        nodes += 1
        if nodes > limits.max_nodes:
            raise CalcError(f"expression too complex (limit {limits.max_nodes} nodes)")
    try:
        return _walk(tree.body, 0, limits)
    except CalcError:
        raise
    except (ZeroDivisionError, ArithmeticError, RecursionError, MemoryError, ValueError) as exc:
        raise CalcError(type(exc).__name__) from None


def calc(expression: str, limits: CalcLimits = DEFAULT_LIMITS) -> str:
    """Evaluate and format: `calc("12*7") == "84"`, `calc("1/6+1/3") == "1/2"`. Raises CalcError."""
    return format_number(evaluate(expression, limits))
