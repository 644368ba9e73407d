"""Repro bundles: one zip file holding everything needed to replay a bad step offline.

Layout (``.ntb`` zip)::

    manifest.json   format, version, step, model/optimizer class, diagnosis, meta, sha256
    model.pt        model.state_dict()          }
    optimizer.pt    optimizer.state_dict()      }  torch.save of plain containers of
    batch.pt        {"inputs": ..., "targets": ...}  tensors; read back with
    rng.pt          torch / cuda / numpy / python RNG states  }  torch.load(weights_only=True)

Nothing user-defined is pickled: saving refuses any value that is not a tensor, a number,
a string, None, or a list/tuple/dict of those; loading uses ``weights_only=True``, so a
bundle cannot run code. A corrupt or mismatched bundle raises
:class:`~nantrap.errors.BundleError` saying what and where.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import random
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nantrap.errors import BundleError, ConfigError
from nantrap.findings import Diagnosis, Finding

__all__ = ["Bundle", "load_bundle", "replay", "save_bundle"]

FORMAT = "nantrap-bundle"
VERSION = 1
_MEMBERS = ("model.pt", "optimizer.pt", "batch.pt", "rng.pt")
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device)


@dataclass
class Bundle:
    """A loaded repro bundle."""

    path: Path
    manifest: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    inputs: Any
    targets: Any
    rng: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        return self.manifest.get("step")

    @property
    def diagnosis(self) -> Diagnosis | None:
        data = self.manifest.get("diagnosis")
        if data is None:
            return None
        found = Finding.from_dict(data)
        return found if isinstance(found, Diagnosis) else None

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.manifest.get("meta") or {})

    def restore(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Load the bundled model (and optimizer) state into ``model`` (``optimizer``)."""
        _load_model(model, self.model_state, self.path)
        if optimizer is not None and self.optimizer_state is not None:
            try:
                optimizer.load_state_dict(self.optimizer_state)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise BundleError(
                    f"{self.path}: optimizer.pt does not fit {type(optimizer).__name__}: {exc}"
                ) from None


def save_bundle(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    inputs: Any,
    targets: Any = None,
    rng: Mapping[str, Any] | None = None,
    step: int | None = None,
    diagnosis: Diagnosis | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a repro bundle to ``path`` (a new file; written atomically) and return it.

    ``rng`` is the RNG state at the start of the step (``capture_rng()``); None captures
    the current state.
    """
    if not isinstance(model, torch.nn.Module):
        raise BundleError(
            f"save_bundle(model=...) needs a torch.nn.Module, got {type(model).__name__}"
        )
    path = Path(path)
    parts = {
        "model.pt": _detached(model.state_dict(), "model.state_dict()"),
        "optimizer.pt": _detached(optimizer.state_dict(), "optimizer.state_dict()")
        if optimizer is not None
        else None,
        "batch.pt": {
            "inputs": _detached(inputs, "inputs"),
            "targets": _detached(targets, "targets"),
        },
        "rng.pt": _detached(dict(rng) if rng is not None else capture_rng(), "rng"),
    }
    blobs = {name: _to_bytes(obj) for name, obj in parts.items()}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "step": step,
        "torch": torch.__version__,
        "model": type(model).__name__,
        "training": model.training,
        "optimizer": type(optimizer).__name__ if optimizer is not None else None,
        "diagnosis": diagnosis.to_dict() if diagnosis is not None else None,
        "meta": json.loads(json.dumps(dict(meta or {}), default=str)),
        "sha256": {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
        for name, blob in blobs.items():
            zf.writestr(name, blob)
    tmp.replace(path)
    return path


def load_bundle(path: str | Path, *, map_location: Any = "cpu") -> Bundle:
    """Read and verify a bundle; BundleError names the file and the broken part."""
    path = Path(path)
    if path.is_dir():
        raise BundleError(f"{path}: is a folder; give the bundle file in it (bundle-step*.ntb)")
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise BundleError(f"{path}: not a nantrap bundle (not a zip file)") from None
    with zf:
        try:
            manifest = json.loads(zf.read("manifest.json"))
        except KeyError:
            raise BundleError(f"{path}: not a nantrap bundle (no manifest.json)") from None
        except (ValueError, zipfile.BadZipFile) as exc:
            raise BundleError(f"{path}: manifest.json is corrupt ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"{path}: manifest.json is not a {FORMAT} manifest")
        if manifest.get("version", 0) > VERSION:
            raise BundleError(
                f"{path}: bundle version {manifest['version']}; this nantrap reads up to "
                f"{VERSION} (upgrade nantrap)"
            )
        parts = {name: _read_member(zf, path, name, manifest, map_location) for name in _MEMBERS}
    batch = parts["batch.pt"]
    if not isinstance(batch, dict) or "inputs" not in batch:
        raise BundleError(f"{path}: batch.pt has no 'inputs'")
    if not isinstance(parts["model.pt"], dict):
        raise BundleError(f"{path}: model.pt is not a state dict")
    return Bundle(
        path=path,
        manifest=manifest,
        model_state=parts["model.pt"],
        optimizer_state=parts["optimizer.pt"],
        inputs=batch["inputs"],
        targets=batch.get("targets"),
        rng=parts["rng.pt"] or {},
    )


def replay(
    bundle: Bundle | str | Path,
    model: torch.nn.Module,
    loss_fn: Callable[..., torch.Tensor],
) -> Diagnosis | None:
    """Localize the bundled step offline: ``loss_fn(model(*inputs), *targets)`` + backward
    on a deep copy of ``model`` (the user's model and RNG are left untouched).

    >>> d = replay("runs/nantrap/step_0041.ntb", Net(), F.cross_entropy)   # doctest: +SKIP
    """
    from nantrap.torch.localize import localize

    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"replay(model=...) needs a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ConfigError(
            f"replay(loss_fn=...) needs a callable loss_fn(output, *targets), "
            f"got {type(loss_fn).__name__}"
        )
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    try:
        twin = copy.deepcopy(model)
    except Exception as exc:
        raise BundleError(f"cannot copy {type(model).__name__} for replay: {exc}") from None
    _load_model(twin, bundle.model_state, bundle.path)
    twin.train(bool(bundle.manifest.get("training", True)))
    device = next((p.device for p in twin.parameters()), torch.device("cpu"))
    inputs = _to_device(bundle.inputs, device)
    targets = _to_device(bundle.targets, device)
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    if isinstance(targets, (tuple, list)):
        extra = tuple(targets)
    else:
        extra = () if targets is None else (targets,)

    def run_step() -> torch.Tensor:
        out = twin(**inputs) if isinstance(inputs, dict) else twin(*args)
        try:
            loss = loss_fn(out, *extra)
        except TypeError as exc:
            if extra:
                raise
            raise BundleError(
                f"{bundle.path}: the bundle holds no targets, and loss_fn(output) failed "
                f"({exc}); let the guard see them (opt.step(targets=y) or "
                "opt.guard.observe(loss, targets=y)), or pass a loss_fn of the output alone"
            ) from None
        loss.backward()
        return loss

    with torch.random.fork_rng(devices=_cuda_devices(bundle.rng)):
        set_rng(bundle.rng)
        return localize(run_step, twin, step=bundle.step)


# --- RNG ----------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python RNG states as plain values."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = [kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached]
    version, internal, gauss = random.getstate()
    state["python"] = [version, list(internal), gauss]
    return state


def set_rng(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured (missing parts are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


# --- helpers ------------------------------------------------------------------------------


def _detached(obj: Any, where: str) -> Any:
    """A copy of ``obj`` with tensors detached on the CPU; refuse anything not plain."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, Mapping):
        return {k: _detached(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_detached(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise BundleError(
        f"{where} holds a {type(obj).__name__}; bundles store only tensors, numbers, strings "
        "and lists/dicts of them (no pickled objects)"
    )


def _to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _read_member(zf: zipfile.ZipFile, path: Path, name: str, manifest: dict, where: Any) -> Any:
    try:
        blob = zf.read(name)
    except KeyError:
        raise BundleError(f"{path}: {name} is missing from the bundle") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleError(f"{path}: {name} cannot be read ({exc})") from None
    expected = (manifest.get("sha256") or {}).get(name)
    if expected is not None and hashlib.sha256(blob).hexdigest() != expected:
        raise BundleError(f"{path}: {name} is corrupt (sha256 does not match the manifest)")
    try:
        return torch.load(io.BytesIO(blob), map_location=where, weights_only=True)
    except Exception as exc:
        raise BundleError(f"{path}: {name} is not a safe tensor file ({exc})") from None


def _load_model(model: torch.nn.Module, state: dict, path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: bundle {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if shapes:
            parts.append("shape " + "; ".join(shapes[:5]))
        raise BundleError(
            f"{path}: model.pt does not match {type(model).__name__}: " + " / ".join(parts)
        )
    model.load_state_dict(state)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _cuda_devices(rng: Mapping[str, Any]) -> list[int]:
    return list(range(len(rng.get("cuda", ())))) if torch.cuda.is_available() else []
