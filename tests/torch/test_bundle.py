"""Repro bundles: round trip, replay localizes offline, corrupt bundles fail clearly."""

from __future__ import annotations

import json
import random
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nantrap.errors import BundleError, ConfigError
from nantrap.torch.bundle import capture_rng, load_bundle, replay, save_bundle, set_rng
from nantrap.torch.localize import localize
from tests.torch._models import SmallCNN, line_of


def _nll_of_probs(p, y):
    return -torch.log(p.gather(1, y[:, None])).mean()  # <- loss on probabilities


def _setup():
    torch.manual_seed(0)
    model = SmallCNN(probs=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    F.nll_loss(model(x).log(), y).backward()
    opt.step()  # non-empty optimizer state
    opt.zero_grad()
    with torch.no_grad():
        model.head.fc.weight.mul_(2000.0)
    return model, opt, x, y


def test_round_trip_and_replay_localizes(tmp_path):
    model, opt, x, y = _setup()

    def step():
        loss = _nll_of_probs(model(x), y)
        loss.backward()
        return loss

    found = localize(step, model, step=41)
    model.zero_grad()
    path = save_bundle(
        tmp_path / "step_41.ntb",
        model=model,
        optimizer=opt,
        inputs=x,
        targets=y,
        step=41,
        diagnosis=found,
        meta={"run": "unit"},
    )
    bundle = load_bundle(path)
    assert bundle.step == 41 and bundle.meta == {"run": "unit"}
    assert bundle.diagnosis == found
    assert torch.equal(bundle.inputs, x) and torch.equal(bundle.targets, y)
    for k, v in model.state_dict().items():
        assert torch.equal(bundle.model_state[k], v), k
    assert bundle.optimizer_state["state"][0]["exp_avg"].shape == model.conv1.weight.shape

    fresh = SmallCNN(probs=True)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    rng = torch.get_rng_state()
    d = replay(path, fresh, _nll_of_probs)
    assert (d.code, d.neutral_op, d.step) == ("NT101", "log", 41)
    assert d.location.line == line_of("# <- loss on probabilities")
    assert d.evidence["producer"]["module"] == "model.head"
    assert d.message == found.message
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert all(p.grad is None for p in fresh.parameters())
    assert torch.equal(torch.get_rng_state(), rng)

    restored = SmallCNN(probs=True)
    opt2 = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    bundle.restore(restored, opt2)
    assert torch.equal(restored.head.fc.weight, model.head.fc.weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_rng_capture_restores_every_generator():
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(), random.random())
    set_rng(state)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_corrupt_and_mismatched_bundles_raise_bundle_error(tmp_path):
    model, opt, x, y = _setup()
    path = save_bundle(tmp_path / "b.ntb", model=model, optimizer=opt, inputs=x, targets=y)

    bad = tmp_path / "flipped.ntb"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "model.pt":
                data = data[:-40] + bytes(40)
            dst.writestr(item, data)
    with pytest.raises(BundleError, match=r"flipped\.ntb: model\.pt is corrupt"):
        load_bundle(bad)

    junk = tmp_path / "junk.ntb"
    junk.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a zip file"):
        load_bundle(junk)

    no_manifest = tmp_path / "nomanifest.ntb"
    with zipfile.ZipFile(no_manifest, "w") as zf:
        zf.writestr("model.pt", b"")
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_bundle(no_manifest)

    with pytest.raises(BundleError, match=r"does not match Linear: missing .*weight"):
        replay(path, torch.nn.Linear(3, 3), _nll_of_probs)

    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "absent.ntb")
    with pytest.raises(BundleError, match="is a folder; give the bundle file"):
        load_bundle(tmp_path)


def test_replay_checks_its_arguments_before_running(tmp_path):
    model, opt, x, y = _setup()
    path = save_bundle(tmp_path / "b.ntb", model=model, optimizer=opt, inputs=x, targets=y)
    with pytest.raises(ConfigError, match=r"loss_fn\(output, \*targets\), got NoneType"):
        replay(path, model, None)
    with pytest.raises(ConfigError, match=r"needs a torch\.nn\.Module, got str"):
        replay(path, "model", _nll_of_probs)
    untargeted = save_bundle(tmp_path / "n.ntb", model=model, optimizer=opt, inputs=x)
    with pytest.raises(BundleError, match=r"n\.ntb: the bundle holds no targets.*targets=y"):
        replay(untargeted, model, _nll_of_probs)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused(tmp_path):
    model, _opt, x, y = _setup()
    path = save_bundle(tmp_path / "b.ntb", model=model, optimizer=None, inputs=x, targets=y)
    evil = tmp_path / "evil.ntb"
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    payload = pickle.dumps({"inputs": Boom()})
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        manifest = json.loads(src.read("manifest.json"))
        del manifest["sha256"]["batch.pt"]
        dst.writestr("manifest.json", json.dumps(manifest))
        for name in ("model.pt", "optimizer.pt", "rng.pt"):
            dst.writestr(name, src.read(name))
        dst.writestr("batch.pt", payload)
    with pytest.raises(BundleError, match=r"batch\.pt is not a safe tensor file"):
        load_bundle(evil)


def test_saving_user_objects_is_refused(tmp_path):
    model, opt, x, _y = _setup()
    with pytest.raises(BundleError, match=r"inputs\[1\] holds a object"):
        save_bundle(tmp_path / "b.ntb", model=model, optimizer=opt, inputs=(x, object()))
    assert not (tmp_path / "b.ntb").exists()
