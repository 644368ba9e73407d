"""Robustness: the linter never raises, whatever the input; fixes always parse."""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nantrap.lint import fix_source, lint_source

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.py"))
CORPUS = [p.read_text() for p in FIXTURES]

_NAMES = st.sampled_from(["x", "y", "p", "z", "self.w", "logits", "mask", "1", "0.5", "1e-8"])
_TARGETS = st.sampled_from(["x", "y", "p", "z", "logits", "mask", "loss"])
_FUNCS = st.sampled_from(
    [
        "torch.log",
        "torch.exp",
        "torch.sqrt",
        "torch.softmax",
        "torch.sigmoid",
        "F.softmax",
        "tf.log",
        "tf.nn.softmax",
        "tf.reduce_sum",
        "tf.clip_by_value",
        "np.log",
        "np.exp",
        "torch.clamp",
        "F.binary_cross_entropy",
        "nn.BCELoss()",
        "jnp.sqrt",
        "torch.acos",
        "K.clip",
        "torch.pow",
        "x.log",
        "x.norm",
        "(x - y).sum",
        "model",
    ]
)


def _expr(depth: int):
    if depth == 0:
        return _NAMES
    sub = _expr(depth - 1)
    return st.one_of(
        sub,
        st.builds(lambda f, a: f"{f}({a})", _FUNCS, sub),
        st.builds(lambda f, a, b: f"{f}({a}, {b})", _FUNCS, sub, sub),
        st.builds(lambda a, o, b: f"({a} {o} {b})", sub, st.sampled_from("+-*/@"), sub),
        st.builds(lambda a: f"-{a}", sub),
        st.builds(lambda a: f"({a}).sum(dim=1)", sub),
    )


_HEADER = (
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
    "import tensorflow as tf\nimport numpy as np\nimport jax.numpy as jnp\n"
    "from keras import backend as K\n"
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_TARGETS, _expr(3)), min_size=1, max_size=6))
def test_generated_programs(assignments):
    body = "".join(f"{name} = {e}\n" for name, e in assignments)
    source = (
        _HEADER
        + "def f(x, y, p, z, logits, mask, model):\n"
        + "".join("    " + line + "\n" for line in body.splitlines())
        + body
    )
    lint_source(source)
    fixed, _ = fix_source(source)
    ast.parse(fixed)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(CORPUS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 40), st.text(max_size=8)), max_size=5),
)
def test_mutated_fixtures(source, cuts):
    for pos, length, insert in cuts:
        pos %= len(source) + 1
        source = source[:pos] + insert + source[pos + length :]
    findings = lint_source(source, "mutant.py")
    assert all(f.location.line is not None for f in findings)
    fixed, _ = fix_source(source)
    if fixed != source:
        ast.parse(fixed)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    lint_source(text)
    lint_source("import torch\n" + text)
