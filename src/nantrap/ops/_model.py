"""Data types of the op table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

# Keys of ``Op.names``. Python API names are fully qualified after alias resolution
# (``torch.nn.functional.softmax``; ``Tensor.log`` for methods); graph names are as the
# graph spells them (``aten.log``, ONNX ``Log``, TF op type ``Log``).
FRAMEWORKS = ("torch", "aten", "tf", "tf_op", "keras", "onnx", "jax", "numpy")


class Kind(str, Enum):
    ELEMENTWISE = "elementwise"
    BINARY = "binary"
    ACTIVATION = "activation"
    REDUCTION = "reduction"
    LINEAR = "linear"
    NORMALIZATION = "normalization"
    LOSS = "loss"
    SHAPE = "shape"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Domain:
    """The real inputs for which an op is defined, on argument ``arg``.

    ``Domain(lo=0, lo_open=True)`` is x > 0; ``Domain(nonzero=True, arg=1)`` is a divisor.
    """

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    nonzero: bool = False
    arg: int = 0

    def contains(self, x: float) -> bool:
        if math.isnan(x):
            return False
        if self.nonzero and x == 0:
            return False
        if x < self.lo or (self.lo_open and x == self.lo):
            return False
        return not (x > self.hi or (self.hi_open and x == self.hi))

    def describe(self, var: str = "x") -> str:
        parts = []
        if self.lo > -math.inf:
            parts.append(f"{var} {'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi < math.inf:
            parts.append(f"{var} {'<' if self.hi_open else '<='} {_num(self.hi)}")
        if self.nonzero:
            parts.append(f"{var} != 0")
        return " and ".join(parts) or "all reals"


@dataclass(frozen=True)
class Op:
    """One neutral op. See ``_table.py`` for the entries."""

    name: str
    kind: Kind
    summary: str
    names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    domain: Domain | None = None
    grad_hazard: str | None = None  # where the gradient is infinite, undefined or zero
    output_range: tuple[float, float] = (-math.inf, math.inf)  # in exact arithmetic
    saturates: bool = False  # reaches its range's bounds exactly in float (sigmoid -> 1.0)
    overflows: bool = False  # can exceed the dtype's max for finite inputs
    blocks_gradient: bool = False  # gradient is exactly 0 on part of the input (clip)
    safe_alternative: str | None = None
    trap: str | None = None  # the catalog code for this op leaving its domain

    def framework_names(self, framework: str) -> tuple[str, ...]:
        return tuple(self.names.get(framework, ()))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)
