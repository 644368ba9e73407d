"""The neutral guard core imports no ML framework (the Keras and torch edges share it)."""

from tests.test_no_framework import _run


def test_guard_core_imports_without_frameworks():
    out = _run(
        "import nantrap.guard as g\n"
        "e = g.GuardEngine(g.GuardConfig(), framework='x', restore=dict, lrs=lambda: [0.1],\n"
        "                  scale_lr=lambda f: None)\n"
        "print(e.classify(g.Observation(param_norm=1.0, grad_norm=float('nan'))))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "non-finite"
