"""Shared wording for rule messages: how to name a value, numbers from the float facts."""

from __future__ import annotations

import ast
import math

from nantrap.floats import float_format
from nantrap.lint._rule import OpCall
from nantrap.lint._values import Value

F32 = float_format("float32")
F16 = float_format("float16")

_KIND_WORDS = {
    "softmax": "a softmax output",
    "sigmoid": "a sigmoid output",
    "one_minus": "1 - a probability",
    "clip": "a clipped value",
    "linear": "a matmul/linear output",
}


def num(x: float) -> str:
    """Compact number for messages: 1e-08, 0.5, 88.72."""
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    if 0.01 <= abs(x) < 1e6:
        return f"{x:.2f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


def snippet(call: OpCall, node: ast.AST | None, limit: int = 40) -> str:
    if node is None:
        return "its input"
    text = " ".join(call.text(node).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"`{text}`"


def what(call: OpCall, node: ast.AST | None, v: Value, kind_word: str | None = None) -> str:
    """``softmax output `p` (line 12)`` - the operand and where its value came from."""
    words = kind_word or _KIND_WORDS.get(v.kind, "the value")
    text = snippet(call, node)
    line = getattr(node, "lineno", 0)
    if v.line and line and v.line != line:
        return f"{text}, {words} (line {v.line})"
    return f"{text}, {words}"


def spelled(call: OpCall, qualified: str) -> str | None:
    """How to spell ``qualified`` in this file (via its imports), or None."""
    return call.alias(qualified)


def paren(text: str, node: ast.AST) -> str:
    """``text`` safe to negate or call on: wrapped in parentheses unless atomic."""
    if isinstance(node, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant)):
        return text
    return f"({text})"


def call_operand(node: ast.AST) -> ast.expr | None:
    """The single tensor operand of ``f(x)`` or ``x.f()``; None if there are other args."""
    if not isinstance(node, ast.Call) or node.keywords:
        return None
    if isinstance(node.func, ast.Attribute) and not node.args:
        return node.func.value
    if len(node.args) == 1 and not isinstance(node.args[0], ast.Starred):
        return node.args[0]
    return None


def is_method_call(node: ast.AST, call: OpCall) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args
