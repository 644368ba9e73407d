"""The op registry: filled once by ``_table.py``, read-only afterwards, duplicates refused."""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

from nantrap.ops._model import FRAMEWORKS, Op

_OPS: dict[str, Op] = {}
_BY_NAME: dict[tuple[str, str], Op] = {}  # (framework, name) -> op


def register(op: Op) -> Op:
    """Add ``op`` to the table; raise on a duplicate op or framework name."""
    if op.name in _OPS:
        raise ValueError(f"op {op.name!r} is registered twice")
    for framework, names in op.names.items():
        if framework not in FRAMEWORKS:
            raise ValueError(f"op {op.name!r}: unknown framework {framework!r} ({FRAMEWORKS})")
        for name in names:
            key = (framework, name)
            if key in _BY_NAME:
                raise ValueError(
                    f"{framework} name {name!r} is claimed by both {_BY_NAME[key].name!r} "
                    f"and {op.name!r}"
                )
            _BY_NAME[key] = op
    _OPS[op.name] = op
    return op


def get_op(name: str) -> Op:
    """The op called ``name`` in the neutral table; KeyError lists close names."""
    _load()
    try:
        return _OPS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _OPS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"no op {name!r} in the op table{hint}") from None


def lookup(framework: str, name: str) -> Op | None:
    """The neutral op for a framework's name, or None.

    Graph names may carry an overload: ``aten.log.default`` and ``aten::log`` find ``log``.
    """
    _load()
    op = _BY_NAME.get((framework, name))
    if op is None and framework == "aten":
        bare = name.replace("::", ".")
        if not bare.startswith("aten."):
            bare = "aten." + bare
        parts = bare.split(".")
        op = _BY_NAME.get((framework, ".".join(parts[:2])))
    return op


def lookup_api(qualified: str) -> Op | None:
    """The neutral op for a resolved Python API name in any framework (``torch.log``)."""
    _load()
    for framework in ("torch", "tf", "keras", "jax", "numpy"):
        op = _BY_NAME.get((framework, qualified))
        if op is not None:
            return op
    return None


def all_ops() -> Iterator[Op]:
    _load()
    return iter(MappingProxyType(_OPS).values())


def _load() -> None:
    if not _OPS:
        from nantrap.ops import _table  # noqa: F401  (fills the registry)
