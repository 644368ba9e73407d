"""The engine: import resolution, value facts across assignments / returns / classes,
suppression, selection, notebooks and unreadable files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from nantrap.lint import LintConfig, fix_file, lint_file, lint_notebook, lint_source
from nantrap.lint._names import canonical


def codes(source: str, **config) -> list[tuple[int, str]]:
    src = textwrap.dedent(source)
    return [(f.location.line, f.code) for f in lint_source(src, config=LintConfig(**config))]


@pytest.mark.parametrize(
    ("imports", "call"),
    [
        ("import tensorflow.compat.v1 as tf", "tf.log(tf.nn.softmax(z))"),
        ("from tensorflow.compat import v1 as tf", "tf.log(tf.nn.softmax(z))"),
        ("from tensorflow import math as tm\nimport tensorflow as tf", "tm.log(tf.nn.softmax(z))"),
        ("from torch.nn import functional as F\nimport torch", "torch.log(F.softmax(z, 1))"),
        ("import torch.nn.functional as fnn\nimport torch", "torch.log(fnn.softmax(z, 1))"),
        ("from torch import log, softmax", "log(softmax(z, 1))"),
        ("import jax.numpy as jnp\nimport jax", "jnp.log(jax.nn.softmax(z))"),
        ("from keras import ops", "ops.log(ops.softmax(z))"),
        ("from tensorflow.keras import backend as K", "K.log(K.softmax(z))"),
    ],
)
def test_aliases_resolve(imports, call):
    assert codes(f"{imports}\ny = {call}\n")[-1][1] == "NT101"


def test_canonical_names():
    assert canonical("tensorflow.compat.v1.nn.softmax") == "tf.nn.softmax"
    assert canonical("tensorflow.keras.losses.binary_crossentropy") == (
        "keras.losses.binary_crossentropy"
    )
    assert canonical("torch.nn.functional.softmax") == "torch.nn.functional.softmax"


def test_unrelated_names_are_not_ops():
    src = """
    import logging, math
    logger = logging.getLogger()
    logger.log(10, "x")
    y = math.log(0.5)
    class M:
        def log(self, *a): pass
    M().log("loss", 1)
    """
    assert codes(src) == []


def test_facts_flow_through_functions_returns_and_classes():
    src = """
    import torch, torch.nn as nn
    def head(x):
        return torch.sigmoid(x)
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.Softmax(dim=-1)
        def forward(self, x):
            return self.act(x)
    class Child(Net):
        pass
    p = head(z)
    a = torch.log(p)
    q = Net()(z)
    b = torch.log(q)
    c = torch.log(Child()(z))
    p = torch.tanh(z)
    d = torch.log(p)
    """
    assert codes(src) == [(14, "NT104"), (16, "NT101"), (17, "NT101")]


def test_guards_silence_division():
    src = """
    import torch
    def f(x, m):
        n = (m > 0).sum()
        a = x / n
        if n > 0:
            b = x / n
        c = x / n if n > 0 else x
        d = torch.where(n > 0, x / n, x)
        e = x / (n + 1e-6)
        return a, b, c, d, e
    """
    # a is flagged; after the `if n > 0` test, n counts as checked
    assert codes(src) == [(5, "NT110")]


def test_no_grad_and_numpy_are_not_gradient_paths():
    src = """
    import torch, numpy as np
    @torch.no_grad()
    def f(a, b):
        return torch.sqrt(((a - b) ** 2).sum())
    def g(a, b):
        return np.sqrt(((a - b) ** 2).sum())
    def h(a, b):
        return torch.sqrt(((a - b) ** 2).sum())
    """
    assert codes(src) == [(9, "NT111")]


def test_suppression_comments():
    src = """
    import torch
    a = torch.log(torch.softmax(z, 1))  # nantrap: ignore[NT101]
    b = torch.log(torch.softmax(z, 1))  # nantrap: ignore
    c = torch.log(torch.softmax(z, 1))  # noqa: NT101
    d = torch.log(torch.softmax(z, 1))  # nantrap: ignore[NT110]
    e = torch.log(torch.softmax(z, 1))  # nantrap: ignore[NT1]
    """
    assert codes(src) == [(6, "NT101")]
    assert codes("# nantrap: ignore-file\nimport torch\ny = torch.log(torch.softmax(z, 1))\n") == []


def test_select_and_ignore_use_the_longest_prefix():
    src = "import torch\na = torch.log(torch.softmax(z, 1))\nb = (x - x.mean()) / x.std()\n"
    assert [c for _, c in codes(src)] == ["NT101", "NT110"]
    assert [c for _, c in codes(src, select=("NT11",))] == ["NT110"]
    assert [c for _, c in codes(src, ignore=("NT1",))] == []
    assert [c for _, c in codes(src, ignore=("NT1",), select=("NT110",))] == ["NT110"]
    cfg = LintConfig(per_file_ignores={"*.py": ("NT101",)})
    assert [f.code for f in lint_source(src, "a.py", cfg)] == ["NT110"]


def test_superseded_findings_are_dropped():
    src = "import tensorflow as tf\ny = tf.nn.softmax(z)\nce = -tf.reduce_sum(t * tf.log(y))\n"
    assert codes(src) == [(3, "NT105")]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"def f(:\n    pass\n", "not valid Python"),
        (b"x = '\xff\xfe\xfa'\n", "not UTF-8"),
        (b"x = 1\x00\n", "null bytes"),
        (b"x = " + b"(" * 300 + b"1" + b")" * 300 + b"\n", ""),
        (b"x = " + b"-" * 5000 + b"1\n", ""),
    ],
)
def test_unreadable_files_give_nt901(tmp_path: Path, content: bytes, why: str):
    path = tmp_path / "bad.py"
    path.write_bytes(content)
    findings = lint_file(path)
    assert [f.code for f in findings] in (["NT901"], [])
    if why:
        assert findings and why in findings[0].message


def test_huge_file_gives_nt901(tmp_path: Path):
    path = tmp_path / "big.py"
    path.write_text("x = 1\n" * 1000)
    (finding,) = lint_file(path, LintConfig(max_file_size=100))
    assert finding.code == "NT901" and "6,000 bytes" in finding.message


def test_latin1_with_coding_cookie_is_read(tmp_path: Path):
    path = tmp_path / "latin.py"
    path.write_bytes(
        b"# -*- coding: latin-1 -*-\nimport torch\ns = '\xe9'\ny = torch.log(torch.softmax(z, 1))\n"
    )
    assert [(f.code, f.location.line) for f in lint_file(path)] == [("NT101", 4)]


def test_columns_count_characters_not_bytes():
    src = "import torch\ns = 'é'; y = torch.log(torch.softmax(z, 1))\n"
    (f,) = lint_source(src)
    assert src.splitlines()[1][f.location.col - 1 :].startswith("torch.log")


def _notebook(*cells: tuple[str, str]) -> str:
    return json.dumps(
        {
            "cells": [
                {"cell_type": kind, "source": src.splitlines(keepends=True), "metadata": {}}
                | ({"outputs": [], "execution_count": None} if kind == "code" else {})
                for kind, src in cells
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def test_notebook_locations_are_cell_relative(tmp_path: Path):
    text = _notebook(
        ("code", "import torch\n%matplotlib inline\n"),
        ("markdown", "# Model\n"),
        ("code", "p = torch.softmax(z, dim=1)\n!pip list\nlp = torch.log(p)\n"),
    )
    findings, _ = lint_notebook(text, "nb.ipynb", LintConfig())
    (f,) = findings
    assert (f.code, f.evidence["cell"], f.location.line, f.location.col) == ("NT101", 3, 3, 6)


def test_notebook_fix_keeps_json_and_magics(tmp_path: Path):
    path = tmp_path / "nb.ipynb"
    path.write_text(
        _notebook(("code", "import torch\n%time x = 1\ny = torch.log(torch.softmax(z, 1))\n"))
    )
    _, new, n = fix_file(path)
    assert n == 1
    cell = json.loads(new)["cells"][0]
    assert "".join(cell["source"]) == "import torch\n%time x = 1\ny = torch.log_softmax(z, 1)\n"


def test_broken_notebook_gives_nt901(tmp_path: Path):
    path = tmp_path / "nb.ipynb"
    path.write_text("{not json")
    assert [f.code for f in lint_file(path)] == ["NT901"]
