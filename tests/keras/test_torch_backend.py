"""NanTrap on Keras 3 with the torch backend: each policy and category with an injected
fault, localized by the PyTorch guard's op tracer.

Keras fixes its backend per process, so the scenarios run once in a subprocess
(``torch_backend_scenarios.py`` with ``KERAS_BACKEND=torch``) and each test asserts on the
facts one of them returned.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("keras")

from tests.conftest import SRC

SCRIPT = Path(__file__).with_name("torch_backend_scenarios.py")
MARK = "NANTRAP-SCENARIOS "


@pytest.fixture(scope="module")
def scenarios() -> dict:
    env = {
        **os.environ,
        "KERAS_BACKEND": "torch",
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len(MARK) :])


def facts(scenarios: dict, name: str) -> dict:
    result = scenarios[name]
    assert result["ok"], result.get("error")
    return result["facts"]


def test_skip_names_log_of_softmax_and_its_line(scenarios):
    f = facts(scenarios, "skip_names_log_of_softmax")
    (d,) = f["diagnoses"]
    assert (d["code"], d["category"], d["phase"], d["step"], d["action"]) == (
        "NT101",
        "domain",
        "forward",
        5,
        "skipped",
    )
    assert d["op"] == "aten.log.default" and d["neutral_op"] == "log"
    assert d["source"] == f"{SCRIPT}:{f['log_line']}" and "ops.log(p)" in d["source_line"]
    assert "softmax in head" in d["message"]
    assert d["evidence"]["producer"]["module"] == "head"
    assert d["evidence"]["inputs"][0]["zeros"] > 0
    assert f["finite"] and math.isfinite(f["loss"])
    assert f["iterations"] == 7  # 8 batches, one dropped
    assert f["event_types"][0] == "run" and f["event_types"][-1] == "end"
    assert f["framework"] == "keras" and f["actions"] == [["skip", 5]]
    assert f["unpatched"] and f["optimizer_unpatched"]


def test_raise_keeps_the_weights_of_the_last_good_step(scenarios):
    f = facts(scenarios, "raise_keeps_last_good_weights")
    assert f["raised"]["code"] == "NT101" and f["raised"]["step"] == 2
    assert f["raised"]["action"] == "raised"
    assert f["finite"] and f["unpatched"]


def test_backward_only_fault_and_bad_data_are_told_apart(scenarios):
    f = facts(scenarios, "backward_fault_and_bad_data")
    sqrt = f["sqrt"]
    assert (sqrt["code"], sqrt["phase"], sqrt["neutral_op"]) == ("NT111", "backward", "sqrt")
    assert sqrt["source"].endswith(f":{f['sqrt_line']}")
    assert sqrt["evidence"]["autograd_node"] == "SqrtBackward0"
    (bad,) = f["data"]
    assert (bad["code"], bad["category"], bad["step"], bad["module"]) == (
        "NT401",
        "bad-data",
        1,
        "conv",
    )
    assert bad["evidence"]["stats"]["nan"] == 1 and bad["evidence"]["layer"] == "model.layers[0]"
    assert f["cnn_finite"]


def test_learning_rate_too_high_rolls_back_lowers_lr_and_recovers(scenarios):
    f = facts(scenarios, "lr_too_high_rolls_back")
    assert not math.isfinite(f["plain_loss"])  # unguarded, the same run ends in NaN
    first = f["incidents"][0]
    assert first["code"] == "NT301" and first["category"] == "divergence"
    assert "too high" in first["message"] and first["action"] == "rolled-back"
    assert f["lr"] <= 3.0 * 0.1 + 1e-6 and f["finite"]
    assert f["loss"] < 2 * f["sane_loss"] + 0.05
    action = f["first_action"]
    assert action["action"] == "rollback" and action["lr_after"] < action["lr_before"]


def test_stop_restores_the_last_snapshot_and_warn_lets_the_update_through(scenarios):
    f = facts(scenarios, "stop_and_warn")
    stop = f["stop"]
    assert stop["actions"] == ["stopped"] and stop["stop_training"]
    assert stop["iterations"] == 4 and stop["finite"]  # back at the snapshot before step 4
    assert f["warn_actions"] == ["warned"] and not f["warn_finite"]
    assert f["warn_codes"] == ["NT101"]  # localized before the bad update went through


def test_early_warnings_saturation_and_clip_trap_before_any_nan(scenarios):
    f = facts(scenarios, "early_warnings_saturation_and_clip_trap")
    assert math.isfinite(f["loss"])  # no NaN: the clip hides it
    codes = {d["code"]: d for d in f["diagnoses"]}
    assert not any(d["incident"] for d in f["diagnoses"])
    clip = codes["NT102"]
    assert clip["category"] == "clip-trap" and clip["evidence"]["blocked_fraction"] > 0.05
    assert clip["source"].endswith(f":{f['clip_line']}") and "ops.clip" in clip["source_line"]
    sat = codes["NT204"]
    assert sat["module"] == "head" and sat["evidence"]["fraction"] > 0.01
    assert f["ranges"] and all(set(r) >= {"model", "hidden", "head"} for r in f["ranges"])
    assert max(r["head"]["saturated"] for r in f["ranges"]) > 0.01


def test_spike_is_skipped_before_it_reaches_the_weights(scenarios):
    f = facts(scenarios, "spike_is_skipped")
    (d,) = f["spikes"]
    assert d["step"] == 25 and d["action"] == "skipped"
    assert f["iterations"] == 31


def test_snapshots_restore_exactly_with_dropout_batchnorm_and_adam(scenarios):
    f = facts(scenarios, "rollback_restores_exactly")
    assert f["changed"] > 0 and f["exact"] and f["same_as_first"]
    (d,) = f["rollback"]
    assert (d["code"], d["step"], d["action"]) == ("NT401", 3, "skipped")
    assert f["guarded_finite"]  # BatchNorm statistics of the dropped step were put back
    assert f["iterations"] == 7


def test_torch_compiled_step_is_guarded_and_replayed_eagerly(scenarios):
    f = facts(scenarios, "torch_compile_step")
    assert f["jit"]
    (d,) = f["diagnoses"]
    assert (d["code"], d["step"], d["action"]) == ("NT101", 2, "skipped")
    assert f["finite"]


def test_loss_scale_overflows_are_left_to_the_loss_scale_optimizer(scenarios):
    f = facts(scenarios, "mixed_precision_loss_scale")
    assert f["diagnoses"] == [] and f["scale_skips"] > 0  # fp16 overflows, handled by LSO
    assert f["scale"] < 2.0**40 and math.isfinite(f["loss"])


def test_a_step_that_raises_leaves_no_patch_hook_or_dispatch_mode(scenarios):
    f = facts(scenarios, "a_step_that_raises_leaves_nothing_behind")
    assert f["error"] == "user bug in the loss"
    assert f["end"]["type"] == "end" and f["end"]["status"] == "error"
    assert f["patched"] == [] and not f["optimizer_patched"]
    assert f["hooks"] == 0 and f["modes"] == 0
