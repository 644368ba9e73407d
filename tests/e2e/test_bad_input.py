"""Scenario: bad input everywhere. Each mistake gets a nantrap error that names what and
where (no traceback from deep inside), and nothing of the user's is changed."""

from __future__ import annotations

import zipfile

import pytest
import torch

import nantrap.torch as nt
from nantrap.errors import BundleError, ConfigError
from tests.conftest import run_nantrap


def _opt(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def _untouched(opt, model) -> bool:
    return (
        type(opt) is torch.optim.SGD
        and not hasattr(opt, "_nantrap_guard")
        and not model._forward_pre_hooks
        and not model._forward_hooks
    )


def test_guard_refuses_what_is_not_an_optimizer_or_a_policy():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ConfigError, match=r"needs a torch\.optim\.Optimizer, got NoneType"):
        nt.guard(None, model)
    with pytest.raises(ConfigError, match="got Linear"):  # arguments swapped
        nt.guard(model, _opt(model))
    opt = _opt(model)
    with pytest.raises(ConfigError, match=r"policy='rollbak'; allowed: raise, warn, skip"):
        nt.guard(opt, model, policy="rollbak")
    with pytest.raises(ConfigError, match=r"unknown guard option\(s\) lr_dcay"):
        nt.guard(opt, model, lr_dcay=0.5)
    with pytest.raises(ConfigError, match=r"cannot track object"):
        nt.guard(opt, model, scheduler=object())
    assert _untouched(opt, model)
    nt.guard(opt, model)  # and the optimizer can still be guarded afterwards
    nt.unguard(opt)


def test_guard_refuses_a_model_that_is_not_a_module():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ConfigError, match=r"nn\.Module"):
        nt.guard(_opt(model), "model")


def test_guard_refuses_a_scaler_that_is_not_a_grad_scaler():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ConfigError, match="GradScaler"):
        nt.guard(_opt(model), model, scaler=object())


def test_a_log_dir_that_is_a_file_is_a_config_error_and_leaves_the_optimizer_alone(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = _opt(model)
    afile = tmp_path / "runs"
    afile.write_text("my notes")
    try:
        with pytest.raises(ConfigError, match="runs"):
            nt.guard(opt, model, log_dir=afile)
    finally:
        assert afile.read_text() == "my notes"
    assert _untouched(opt, model)


def test_corrupt_bundles_and_wrong_replay_arguments(tmp_path):
    junk = tmp_path / "bundle-step3.ntb"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(BundleError, match=r"bundle-step3\.ntb: not a nantrap bundle"):
        nt.load_bundle(junk)
    broken = tmp_path / "broken.ntb"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("manifest.json", "{not json")
    with pytest.raises(BundleError, match=r"broken\.ntb: manifest\.json is corrupt"):
        nt.load_bundle(broken)
    with pytest.raises(BundleError, match="is a folder"):
        nt.load_bundle(tmp_path)
    with pytest.raises(ConfigError, match="loss_fn"):
        nt.replay(junk, torch.nn.Linear(2, 1), None)
    assert junk.read_bytes() == b"\x00garbage"


def test_cli_on_bad_paths_and_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_nantrap("report", str(empty))
    assert r.returncode == 2 and "no events.jsonl in this folder" in r.stderr
    assert "Traceback" not in r.stderr

    r = run_nantrap("report", str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such run folder" in r.stderr

    binary = tmp_path / "weights.py"
    binary.write_bytes(b"\x00\x01\xff\xfe\x80 binary")
    r = run_nantrap("lint", str(binary))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{binary}:1:1: NT901" in r.stdout and "not UTF-8" in r.stdout
    assert binary.read_bytes() == b"\x00\x01\xff\xfe\x80 binary"

    r = run_nantrap("lint", "--fix", str(binary))
    assert binary.read_bytes() == b"\x00\x01\xff\xfe\x80 binary"  # --fix leaves it alone

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"garbage")
    r = run_nantrap("analyze", str(onnx), "--input", "x=0:1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot read ONNX file {onnx}" in r.stderr

    r = run_nantrap("analyze", "no_such_module_xyz:factory")
    assert r.returncode == 2 and "cannot import 'no_such_module_xyz'" in r.stderr


def test_report_on_an_empty_folder_writes_nothing(tmp_path):
    r = run_nantrap("report", str(tmp_path))
    assert r.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_a_log_dir_that_cannot_be_written_leaves_the_optimizer_alone(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = _opt(model)
    (tmp_path / "notes").write_text("mine")
    with pytest.raises(ConfigError, match=r"notes.*a file, not a folder \(.*notes is\)"):
        nt.guard(opt, model, log_dir=tmp_path / "notes" / "run1")
    (tmp_path / "run2" / "events.jsonl").mkdir(parents=True)  # the log file's name is taken
    with pytest.raises(ConfigError, match=r"run2.*cannot write the event log there"):
        nt.guard(opt, model, log_dir=tmp_path / "run2")
    assert _untouched(opt, model)
    assert (tmp_path / "notes").read_text() == "mine"
    nt.unguard(nt.guard(opt, model, log_dir=tmp_path / "run3"))  # a good folder still works
