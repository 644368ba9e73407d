"""Scenario: the seed's traps before anything runs. ``nantrap lint`` on a TF1 tutorial-style
script and a PyTorch script (``--fix`` output still runs, with the same result);
``nantrap analyze`` on a classifier that takes log of a softmax and on its fixed twin."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import run_nantrap

SCRIPTS = Path(__file__).parent / "scripts"


def test_lint_finds_the_seed_traps_in_a_tf1_tutorial():
    path = SCRIPTS / "tf1_mnist.py"
    r = run_nantrap("lint", "--format", "json", str(path))
    assert r.returncode == 1, r.stderr
    found = {(f["code"], f["location"]["line"], f["location"]["col"]) for f in _findings(r)}
    # 10: -reduce_sum(y_ * tf.log(y)) on a softmax; 11: the seed's clip_by_value "fix"
    assert found == {("NT105", 10, 33), ("NT102", 11, 46)}
    clip = next(f for f in _findings(r) if f["code"] == "NT102")
    assert "-log(1e-10) = 23.03" in clip["message"]


def test_lint_cross_entropy_fix_names_the_labels():
    r = run_nantrap("lint", "--format", "json", str(SCRIPTS / "tf1_mnist.py"))
    ce = next(f for f in _findings(r) if f["code"] == "NT105")
    assert "labels=y_" in ce["fix"], ce["fix"]


def test_lint_fix_on_a_pytorch_script_keeps_its_result(tmp_path):
    original = SCRIPTS / "torch_losses.py"
    r = run_nantrap("lint", "--format", "json", str(original))
    assert {(f["code"], f["location"]["line"]) for f in _findings(r)} == {
        ("NT101", 7),  # log(softmax) through a variable: reported, not auto-fixed
        ("NT104", 8),  # log(sigmoid(z)): safe fix to logsigmoid
    }
    fixed = tmp_path / "torch_losses.py"
    shutil.copy(original, fixed)
    r = run_nantrap("lint", "--fix", str(fixed))
    assert "Fixed 1 finding" in r.stdout + r.stderr
    assert "F.logsigmoid(z)" in fixed.read_text()
    assert original.read_text().count("\n") == fixed.read_text().count("\n")
    before, after = _run_script(original), _run_script(fixed)
    assert before == after and before.startswith("loss ")
    r = run_nantrap("lint", "--format", "json", str(fixed))
    assert [f["code"] for f in _findings(r)] == ["NT101"]


def test_analyze_flags_log_of_softmax_and_not_its_fixed_twin():
    r = run_nantrap(
        "analyze", "tests.e2e._analyze_models:bad", "--input", "x=0:1", "--format", "json"
    )
    assert r.returncode == 1, r.stderr
    errors = [f for f in _findings(r) if f["severity"] == "error"]
    assert [f["code"] for f in errors] == ["NT101"]
    f = errors[0]
    assert f["location"]["path"].endswith("_analyze_models.py")
    assert f["location"]["line"] == _line("# <- log of a softmax")
    assert f["evidence"]["path"][:3] == ["log", "softmax", "linear head"]
    # the alarm is real for these weights: some inputs in [0, 1] reach log(0)
    from tests.e2e._analyze_models import bad, fixed

    model, _ = bad()
    xs = torch.rand(2000, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.isfinite(model(xs)).all()
        assert torch.isfinite(fixed()[0](xs)).all()

    r = run_nantrap(
        "analyze", "tests.e2e._analyze_models:fixed", "--input", "x=0:1", "--format", "json"
    )
    assert r.returncode == 0, r.stderr
    assert [f for f in _findings(r) if f["severity"] in ("error", "warning")] == []


def _findings(r) -> list[dict]:
    return json.loads(r.stdout)["findings"]


def _line(marker: str) -> int:
    from tests.e2e import _analyze_models
    from tests.torch._models import line_of

    return line_of(marker, _analyze_models.__file__)


def _run_script(path: Path) -> str:
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
