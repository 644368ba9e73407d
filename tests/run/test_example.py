"""The unmodified example script under ``nantrap run``: the report names the divergence;
with ``--policy rollback`` the same script trains to 100% accuracy."""

from __future__ import annotations

import json
from pathlib import Path

from nantrap.report.run_log import load_run
from tests.conftest import run_nantrap

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_mnist_style.py"


def test_warn_policy_reports_the_divergence(tmp_path):
    out = run_nantrap(
        "run", "--log-dir", str(tmp_path / "run"), str(EXAMPLE), "--epochs", "1", cwd=tmp_path
    )
    assert out.returncode == 1, out.stderr[-3000:]  # the script's own verdict: not learned
    assert "final loss nan" in out.stdout
    assert "NT301 divergence" in out.stderr
    log = load_run(tmp_path / "run")
    first = log.incidents()[0].diagnosis
    assert first.code == "NT301" and first.step == 4
    assert "LR 6 is" in first.message and first.evidence["suggested_lr"] < 6
    page = (tmp_path / "run" / "report.html").read_text()
    assert "NT301 learning-rate-divergence" in page and "<svg" in page


def test_rollback_policy_converges(tmp_path):
    run_dir = tmp_path / "run"
    out = run_nantrap(
        "run",
        "--policy",
        "rollback",
        "--log-dir",
        str(run_dir),
        str(EXAMPLE),
        "--epochs",
        "2",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "accuracy 1.000" in out.stdout
    log = load_run(run_dir)
    actions = [(a["action"], a["lr_before"], a["lr_after"]) for a in log.actions]
    assert actions == [("rollback", 6.0, 3.0), ("rollback", 3.0, 1.5)]
    assert log.status == "ok"
    kept = log.series("loss")[-1][1]
    assert kept[-1] < 0.05 < kept[0]  # the kept segment after the rollbacks converged
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["guarded"] == [f"SGD of Net -> {run_dir}"]
    assert meta["exit_code"] == 0
