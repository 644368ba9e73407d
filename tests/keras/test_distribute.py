"""NanTrap under ``tf.distribute.MirroredStrategy`` with two logical CPU devices (run in a
subprocess: logical devices must be set before TensorFlow initializes its devices)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SRC

pytest.importorskip("tensorflow")
pytest.importorskip("keras")


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored") / "result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.keras._mirrored_worker", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["replicas"] == 2
    return result


def test_a_fault_on_one_replica_is_localized_and_skipped_on_both(mirrored):
    run = mirrored["skip"]  # batch 5 is non-finite in the second replica's rows only
    assert run["diagnoses"] == [
        {
            "code": "NT101",
            "step": 5,
            "action": "skipped",
            "module": "compile_loss/hand_ce",
            "op": "Log",
            "producer": "head",
        }
    ]
    assert run["iterations"] == 7 and run["replicas_agree"]
    # the weights and the logged losses are those of an unguarded run without batch 5
    assert run["weights_diff"] < 1e-5 and run["loss_diff"] < 1e-5
    assert run["logged_steps"] == [0, 1, 2, 3, 4, 6, 7]
    assert math.isfinite(run["epoch_loss"])  # the dropped step left Keras' metrics alone
    assert run["end"]["step"] == 8 and run["end"]["status"] == "ok"


def test_stop_restores_every_replica_exactly_with_steps_per_execution(mirrored):
    run = mirrored["stop"]
    (d,) = run["diagnoses"]
    assert (d["code"], d["step"], d["action"]) == ("NT101", 5, "stopped")
    assert run["iterations"] == 4 and run["replicas_agree"]
    assert run["weights_diff"] < 1e-5  # the snapshot at the execution boundary (step 4)
    assert run["end"]["status"] == "stopped" and run["end"]["step"] == 4


def test_what_the_replicated_gate_cannot_drop_is_refused(mirrored):
    assert "AdamW with weight_decay" in mirrored["adamw"]
    assert "tf.distribute" in mirrored["adamw"]
    assert mirrored["adamw_untouched"]  # refused before the optimizer or model was patched
    assert "CentralStorageStrategy" in mirrored["central_storage"]
    assert "MirroredStrategy" in mirrored["central_storage"]


def test_guard_step_gates_a_custom_strategy_run_loop(mirrored):
    run = mirrored["custom_loop"]
    assert run["diagnoses"] == [["NT101", 5, "skipped", "Log"]]
    assert run["iterations"] == 7 and run["finite"] and run["replicas_agree"]


def test_a_nan_input_on_one_replica_is_named_in_the_global_batch(mirrored):
    assert mirrored["bad_input"] == [["NT401", "bad-data", 5, "hidden", 1]]
