"""Import and alias resolution: local names -> canonical qualified API names.

``import tensorflow.compat.v1 as tf``, ``from torch.nn import functional as F`` and
``from tensorflow import math as tm`` all resolve to the names the op table uses
(``tf.log``, ``torch.nn.functional.softmax``, ``tf.math.log``).

>>> canonical("tensorflow.compat.v1.log")
'tf.log'
>>> canonical("tensorflow.keras.backend.log")
'keras.backend.log'
"""

from __future__ import annotations

import ast

from nantrap.ops import Op, lookup_api

# Longest prefixes first: module spellings that name the same API.
_PREFIXES = (
    ("tensorflow.compat.v1.", "tf."),
    ("tensorflow.compat.v2.", "tf."),
    ("tensorflow.python.keras.", "keras."),
    ("tensorflow.keras.", "keras."),
    ("tensorflow.", "tf."),
    ("tf.compat.v1.", "tf."),
    ("tf.compat.v2.", "tf."),
    ("tf.keras.", "keras."),
    ("keras.api.", "keras."),
    ("keras.src.ops.", "keras.ops."),
    ("torch.nn.modules.loss.", "torch.nn."),
    ("torch.nn.modules.activation.", "torch.nn."),
)
_FRAMEWORKS = {"torch": "torch", "tf": "tf", "keras": "keras", "jax": "jax", "numpy": "numpy"}


def canonical(qualified: str) -> str:
    """The op table's spelling of a fully qualified name."""
    name = qualified + "."
    for old, new in _PREFIXES:
        if name.startswith(old):
            name = new + name[len(old) :]
            break
    return name[:-1]


def framework_of(qualified: str | None) -> str | None:
    """``torch`` / ``tf`` / ``keras`` / ``jax`` / ``numpy`` for a canonical name."""
    if not qualified:
        return None
    if qualified.startswith("Tensor."):
        return "torch"
    return _FRAMEWORKS.get(qualified.split(".", 1)[0])


def lookup(qualified: str) -> Op | None:
    """The neutral op for a canonical API name (``keras.backend.*`` reads as ``keras.ops.*``)."""
    op = lookup_api(qualified)
    if op is None and qualified.startswith("keras.backend."):
        op = lookup_api("keras.ops." + qualified[len("keras.backend.") :])
    return op


def import_bindings(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """(local name, canonical qualified name) for each name an import statement binds."""
    out = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                out.append((alias.asname, canonical(alias.name)))
            else:  # `import torch.nn` binds `torch`
                top = alias.name.split(".", 1)[0]
                out.append((top, canonical(top)))
    elif node.module and not node.level:
        for alias in node.names:
            if alias.name != "*":
                out.append((alias.asname or alias.name, canonical(f"{node.module}.{alias.name}")))
    return out


def dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"]; None if the chain does not end at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    parts.reverse()
    return parts
