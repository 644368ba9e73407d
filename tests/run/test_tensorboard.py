"""``nantrap run --guard-option tensorboard=true``: an unchanged script's guarded steps
reach TensorBoard, in the run folder's ``tb/``."""

from __future__ import annotations

import textwrap

import pytest

from tests.conftest import run_nantrap
from tests.guard.test_sinks import read_tensorboard

SCRIPT = textwrap.dedent(
    """
    import torch
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 4)
    y = x.sum(1, keepdim=True)
    for _ in range(5):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    """
)


def test_zero_code_run_writes_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    out = run_nantrap(
        "run",
        "--log-dir",
        str(run_dir),
        "--guard-option",
        "tensorboard=true",
        "--guard-option",
        "log_every=1",
        str(script),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    scalars, _ = read_tensorboard(run_dir / "tb")
    assert [s for s, _ in scalars["nantrap/loss"]] == [0, 1, 2, 3, 4]
    losses = [v for _, v in scalars["nantrap/loss"]]
    assert losses[-1] < losses[0]  # the script's own training, seen by the guard
    assert [v for _, v in scalars["nantrap/lr"]] == pytest.approx([0.1] * 5)
