"""``nantrap run`` of an unchanged Keras script: its ``fit`` gets the NanTrap callback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nantrap.report.run_log import load_run
from tests.conftest import run_nantrap

pytest.importorskip("keras")
SCRIPT = Path(__file__).resolve().parents[1] / "run" / "scripts" / "keras_train.py"


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_fit_of_an_unchanged_script_is_guarded(tmp_path, backend):
    pytest.importorskip(backend)
    run_dir = tmp_path / "run"
    out = run_nantrap(
        "run",
        "--policy",
        "skip",
        "--log-dir",
        str(run_dir),
        str(SCRIPT),
        cwd=tmp_path,
        env={"KERAS_BACKEND": backend},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finite weights True" in out.stdout  # the NaN batch's update was dropped
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["guarded"] == [f"fit of Sequential -> {run_dir}"]
    log = load_run(run_dir)
    [incident] = log.incidents()
    assert incident.step == 2 and incident.diagnosis.category.value == "bad-data"
    assert [a["action"] for a in incident.actions] == ["skip"]
    assert log.header["framework"] == "keras"
    assert f"keras backend {backend}" in out.stdout
    assert "NT401" in (run_dir / "report.html").read_text()
