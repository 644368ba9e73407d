"""Facts into function parameters from their call sites in the same file: the finding is
at the line inside the function, its message names the call site, and a fact only some
call sites bring is a warning."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nantrap.findings import Severity
from nantrap.lint import lint_file, lint_paths, lint_source


def lint(source: str):
    return lint_source(textwrap.dedent(source).lstrip("\n"))


def one(source: str):
    findings = lint(source)
    assert len(findings) == 1, [(f.location.line, f.code, f.message) for f in findings]
    return findings[0]


def test_module_function_positional_argument():
    f = one(
        """
        import torch

        def nll(p, y):
            return torch.log(p).gather(1, y)

        def step(model, x, y):
            probs = torch.softmax(model(x), dim=1)
            return nll(probs, y).mean()
        """
    )
    assert (f.code, f.location.line, f.location.col) == ("NT101", 4, 12)
    assert f.message.endswith("; `p` is a softmax output passed to `nll` at line 8")
    assert "(line 7)" in f.message  # where the softmax itself was computed
    assert f.severity is Severity.ERROR
    assert (f.evidence["parameter"], f.evidence["call_line"]) == ("p", 8)
    assert not f.edits  # the rewrite to log_softmax needs the softmax call at hand


def test_keyword_arguments_in_tf1_style():
    f = one(
        """
        import tensorflow as tf

        def loss_fn(y_pred, y_true):
            return tf.reduce_mean(-tf.reduce_sum(y_true * tf.log(y_pred), axis=1))

        y_conv = tf.nn.softmax(tf.matmul(h, W) + b)
        cost = loss_fn(y_true=y_, y_pred=y_conv)
        """
    )
    assert (f.code, f.location.line) == ("NT105", 4)
    assert "a softmax output (line 6)" in f.message
    assert "`y_pred` is a softmax output passed to `loss_fn` at line 7" in f.message


def test_method_called_through_self():
    findings = lint(
        """
        import torch.nn as nn
        import torch.nn.functional as F

        class Distiller(nn.Module):
            def kl(self, p, q):
                return (p * (p.log() - q.log())).sum(1).mean()

            def forward(self, s, t):
                return self.kl(F.softmax(t, dim=1), F.softmax(s, dim=1))
        """
    )
    assert [(f.code, f.location.line, f.location.col) for f in findings] == [
        ("NT101", 6, 22),
        ("NT101", 6, 32),
    ]
    assert "`p` is a softmax output passed to `kl` at line 9" in findings[0].message
    assert "`q` is a softmax output passed to `kl` at line 9" in findings[1].message


def test_nested_function_and_lambda():
    findings = lint(
        """
        import torch

        bce = lambda p, t: -(t * torch.log(p)).mean()

        def step(d, x, t):
            def normalize(v, scale):
                return v / scale
            x = normalize(x, x.std())
            return bce(torch.sigmoid(d(x)), t)
        """
    )
    got = [(f.code, f.location.line) for f in findings]
    assert got == [("NT104", 3), ("NT110", 7)]
    assert "`p` is a sigmoid output passed to `bce` at line 9" in findings[0].message
    assert "`scale` is a standard deviation passed to `normalize` at line 8" in (
        findings[1].message
    )


def test_chain_of_calls_reaches_a_fixed_point():
    f = one(
        """
        import torch

        def nll(p, y):
            return torch.log(p).gather(1, y).mean()

        def loss(probs, y):
            return nll(probs, y)

        out = loss(torch.softmax(z, 1), y)
        """
    )
    assert (f.code, f.location.line) == ("NT101", 4)
    assert "`p` is a softmax output passed to `nll` at line 7" in f.message


def test_models_passed_to_functions_carry_their_output():
    f = one(
        """
        import torch, torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                return torch.softmax(self.fc(x), dim=-1)

        def evaluate(model, x):
            p = model(x)
            return torch.log(p).mean()

        print(evaluate(Net(), data))
        """
    )
    assert (f.code, f.location.line) == ("NT101", 9)


def test_default_value_guards_the_parameter():
    src = """
        import torch

        def entropy(p, eps=1e-8):
            return -(p * torch.log(p + eps)).sum(-1)

        h = entropy(torch.softmax(z, -1))
        """
    assert lint(src) == []
    # passing eps=0 at the call site removes the guard
    f = one(src.replace("entropy(torch.softmax(z, -1))", "entropy(torch.softmax(z, -1), 0.0)"))
    assert (f.code, f.location.line) == ("NT105", 4)


def test_never_called_with_a_probability_is_silent():
    src = """
        import torch

        def log_prob(p):
            return torch.log(p)

        def gaussian(x, std):
            return torch.log(std) + ((x / std) ** 2).mean()

        a = log_prob(torch.exp(s))
        b = log_prob(counts.float() + 1)
        c = gaussian(x, torch.nn.functional.softplus(raw) + 1e-4)
        """
    assert lint(src) == []


def test_uncalled_function_has_no_facts():
    assert lint("import torch\ndef f(p):\n    return torch.log(p)\n") == []


def test_softmax_at_one_call_site_and_logits_at_another_is_a_warning():
    f = one(
        """
        import torch

        def score(p):
            return torch.log(p).sum()

        a = score(torch.softmax(z, 1))
        b = score(z @ w)
        """
    )
    assert (f.code, f.location.line) == ("NT101", 4)
    assert f.severity is Severity.WARNING
    assert f.message.endswith(
        "`p` is a softmax output passed to `score` at line 6 (other calls may pass other values)"
    )
    assert f.evidence["maybe"] is True


def test_function_used_as_a_value_is_a_warning():
    f = one(
        """
        import torch

        def score(p):
            return torch.log(p).sum()

        a = score(torch.softmax(z, 1))
        hooks = [score]
        """
    )
    assert f.severity is Severity.WARNING


def test_guarded_at_one_call_site_is_not_flagged():
    src = """
        import torch

        def score(p):
            return torch.log(p).sum()

        a = score(torch.softmax(z, 1) + 1e-6)
        b = score(torch.softmax(w, 1).clamp_min(1e-6))
        """
    assert lint(src) == []


def test_starred_and_spread_arguments_bind_nothing():
    src = """
        import torch

        def score(p, q):
            return torch.log(q).sum()

        args = (torch.softmax(z, 1),)
        a = score(x, *args)
        b = score(**kw)
        """
    assert lint(src) == []


def test_recursion_terminates():
    findings = lint(
        """
        import torch

        def f(p, n):
            if n == 0:
                return torch.log(p)
            return g(p, n - 1)

        def g(p, n):
            return f(p, n)

        out = f(torch.softmax(z, 1), 3)
        """
    )
    assert [(f.code, f.location.line) for f in findings] == [("NT101", 5)]


def test_a_finding_that_does_not_rest_on_the_fact_keeps_its_message_and_severity():
    f, g = lint(
        """
        import torch

        def f(q, p):
            return q / torch.sum(q**2) + torch.log(p).sum()

        out = f(x / n, torch.softmax(z, -1))
        out = f(x / m, z)
        """
    )
    # q carries a (ratio) fact from its call sites, but NT110 rests on the sum of squares
    assert (f.code, f.location.line, f.severity) == ("NT110", 4, Severity.ERROR)
    assert "passed to" not in f.message
    assert (g.code, g.location.line, g.severity) == ("NT101", 4, Severity.WARNING)
    assert "`p` is a softmax output passed to `f` at line 6" in g.message


# ---- across the files of one project (lint_paths) -------------------------------------------
def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return tmp_path


LOSSES = """
    import torch

    def cross_entropy(p, y):
        return torch.log(p).gather(1, y).mean()

    def entropy(p, eps=1e-8):
        return -(p * torch.log(p + eps)).sum(-1)
    """


@pytest.mark.parametrize(
    "importer",
    [
        "from .losses import cross_entropy, entropy",
        "from pkg.losses import cross_entropy, entropy",
    ],
)
def test_relative_and_absolute_imports_within_the_project(tmp_path: Path, importer: str):
    root = _project(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/losses.py": LOSSES,
            "pkg/train.py": f"""
                import torch
                {importer}

                def step(model, x, y):
                    probs = torch.softmax(model(x), dim=1)
                    return cross_entropy(probs, y) + entropy(probs).mean()
                """,
        },
    )
    report = lint_paths([root / "pkg"])
    (f,) = report.findings
    assert (f.code, Path(f.location.path).name, f.location.line) == ("NT101", "losses.py", 4)
    assert f.severity is Severity.ERROR
    where = f"{root / 'pkg' / 'train.py'}:6"
    assert f.message.endswith(f"`p` is a softmax output passed to `cross_entropy` at {where}")
    # each file alone knows nothing of the other
    assert "NT101" not in [g.code for g in lint_file(root / "pkg" / "losses.py")]


def test_script_next_to_its_module_and_disagreeing_callers(tmp_path: Path):
    root = _project(
        tmp_path,
        {
            "losses.py": LOSSES,
            "train.py": """
                import torch
                import losses

                probs = torch.softmax(z, dim=1)
                loss = losses.cross_entropy(probs, y)
                """,
            "eval.py": """
                from losses import cross_entropy

                loss = cross_entropy(model(x), y)
                """,
        },
    )
    f = next(f for f in lint_paths([root]).findings if f.code == "NT101")
    assert (f.code, f.location.line, f.severity) == ("NT101", 4, Severity.WARNING)
    assert f"at {root / 'train.py'}:5 (other calls may pass other values)" in f.message


def test_project_calls_never_reach_outside_files(tmp_path: Path):
    root = _project(
        tmp_path,
        {
            "train.py": """
                import torch
                from os.path import join
                from torch.nn.functional import nll_loss

                probs = torch.softmax(z, dim=1)
                out = join(probs, "x")
                """,
        },
    )
    assert lint_paths([root]).findings == []


def test_a_fact_flowing_through_computation_keeps_its_call_site():
    src = """
        import numpy as np

        def xent(labels, logits):
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs = e / e.sum(axis=-1, keepdims=True)
            return -np.sum(labels * np.log(probs + 1.0e-20), axis=-1)

        a = xent(y, np.array(z).astype(np.float16))
        b = xent(y, np.array(z).astype(np.float32))
        """
    f = one(src)
    assert (f.code, f.location.line, f.severity) == ("NT202", 6, Severity.WARNING)
    assert "`logits` is a float16 value passed to `xent` at line 8 (other calls" in f.message


def test_a_constant_argument_is_not_named_as_the_cause():
    f = one(
        """
        import torch

        def softplus_by_hand(x):
            return torch.log(1 + torch.exp(x))

        a = softplus_by_hand(3.0)
        b = softplus_by_hand(100.0)
        """
    )
    assert (f.code, f.location.line, f.severity) == ("NT113", 4, Severity.ERROR)
    assert "passed to" not in f.message
