"""Names of a Keras model's layers, on any backend: paths (``encoder/dense``) and indices
(``model.layers[2]``), the way diagnoses name them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LayerName", "layer_names"]


@dataclass(frozen=True)
class LayerName:
    layer: Any
    path: str  # layer names from the model down, joined by "/"
    index: str | None  # "model.layers[2]" (None where the parent has no ``layers`` list)


def layer_names(model: Any, root: str = "model") -> list[LayerName]:
    """Every layer under ``model`` (not the model itself), parents before children; input
    layers are left out (they run no op)."""
    out: list[LayerName] = []
    seen: set[int] = set()

    def walk(layer: Any, path: str, index: str | None) -> None:
        listed = {id(sub): i for i, sub in enumerate(getattr(layer, "layers", None) or ())}
        for sub in _children(layer):
            if id(sub) in seen or type(sub).__name__ == "InputLayer":
                continue
            seen.add(id(sub))
            sub_path = f"{path}/{sub.name}" if path else sub.name
            sub_index = (
                f"{index}.layers[{listed[id(sub)]}]" if index and id(sub) in listed else None
            )
            out.append(LayerName(sub, sub_path, sub_index))
            walk(sub, sub_path, sub_index)

    walk(model, "", root)
    return out


def _children(layer: Any) -> list[Any]:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", None) or ())
