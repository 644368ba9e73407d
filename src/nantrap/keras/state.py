"""Exact host copies of Keras training state on any backend (and of plain ``tf.Variable``s):
weights, optimizer slots, the iteration counter, the learning rate and the RNG seed states
(Keras ``SeedGenerator``s are variables of the layers that own them). Restore is bit-exact."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from nantrap.errors import ConfigError

__all__ = ["VariableState", "is_seed_state", "keras_state_variables", "step_state"]


def keras_state_variables(model: Any, optimizer: Any = None) -> list[Any]:
    """Every variable a Keras training run changes: the model's (trainable, non-trainable,
    seed states) and the optimizer's (iterations, learning rate, slots), each once."""
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    variables = list(model.variables)
    if optimizer is not None:
        if not optimizer.built and getattr(model, "trainable_variables", None):
            optimizer.build(model.trainable_variables)
        variables += list(optimizer.variables)
    return _unique(variables)


def step_state(model: Any) -> list[Any]:
    """The model's non-trainable float variables a training step writes besides the
    optimizer (BatchNorm moving statistics): the guard puts them back when it drops a step."""
    return [
        v
        for v in getattr(model, "non_trainable_variables", ())
        if "float" in str(getattr(v, "dtype", "")) and not is_seed_state(v)
    ]


def is_seed_state(v: Any) -> bool:
    """Whether ``v`` is the state of a Keras ``SeedGenerator`` (dropout masks come from it)."""
    return str(getattr(v, "path", getattr(v, "name", ""))).endswith("seed_generator_state")


class VariableState:
    """Captures and restores a fixed list of variables (``tf.Variable`` or Keras variables).

    ``capture()`` returns ``{"names": [...], "values": [numpy arrays]}``, a plain structure
    (``state_dict``-like, picklable, no framework objects); ``restore(state)`` assigns it
    back, checking names and shapes first so a mismatched state never half-applies.
    """

    def __init__(self, variables: Iterable[Any]):
        self.variables = _unique(variables)
        self.names = [_name(v, i) for i, v in enumerate(self.variables)]

    def capture(self) -> dict[str, Any]:
        return {"names": list(self.names), "values": [np.array(_read(v)) for v in self.variables]}

    def restore(self, state: dict[str, Any]) -> None:
        names, values = list(state["names"]), list(state["values"])
        if names != self.names:
            missing = sorted(set(self.names) - set(names))
            extra = sorted(set(names) - set(self.names))
            raise ConfigError(
                f"snapshot does not match the model: missing {missing[:5]}, unknown {extra[:5]}"
            )
        for v, name, value in zip(self.variables, names, values, strict=True):
            if tuple(v.shape) != tuple(np.shape(value)):
                raise ConfigError(
                    f"snapshot of {name} has shape {np.shape(value)}, the variable {v.shape}"
                )
        for v, value in zip(self.variables, values, strict=True):
            v.assign(value)

    @staticmethod
    def equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
        """Bit-for-bit equality of two captured states (NaN payloads included)."""
        return a["names"] == b["names"] and all(
            x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
            for x, y in zip(a["values"], b["values"], strict=True)
        )

    def differing(self, a: dict[str, Any], b: dict[str, Any]) -> Sequence[str]:
        """Names of the variables whose bits differ between two captured states."""
        return [
            n
            for n, x, y in zip(a["names"], a["values"], b["values"], strict=True)
            if x.tobytes() != y.tobytes()
        ]


def _read(v: Any) -> Any:
    return v.numpy() if hasattr(v, "numpy") else v.value.numpy()


def _name(v: Any, i: int) -> str:
    return str(getattr(v, "path", None) or getattr(v, "name", None) or f"variable_{i}")


def _unique(variables: Iterable[Any]) -> list[Any]:
    seen: set[int] = set()
    out = []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
