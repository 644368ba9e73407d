"""Which linted file a call of an imported function lands in (the project pass).

``from .losses import cross_entropy`` in ``pkg/train.py`` is ``pkg/losses.py``'s
``cross_entropy``; ``from losses import ce`` / ``import losses`` is looked up next to the
calling file and under each linted folder (and its parent, for a package folder). Only
files linted together count: the standard library and installed packages never match.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from nantrap.lint._calls import spreads
from nantrap.lint._names import dotted, import_bindings
from nantrap.lint._values import UNKNOWN


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


class Project:
    """The files linted together; collects each file's calls into the others."""

    def __init__(self, roots: list[Path], files: list[Path]) -> None:
        self.known = {_key(p): p for p in files if p.suffix == ".py"}
        self.bases: list[Path] = []
        for root in roots:
            if root.is_dir():
                self.bases.append(root)
                if (root / "__init__.py").is_file():
                    self.bases.append(root.parent)
        # callee file -> (function, caller path, line, spreads, values, kwvalues)
        self.incoming: dict[Path, list] = {}
        self._modules: dict[tuple, Path | None] = {}

    def add(self, caller: Path, calls: list) -> None:
        """Route ``caller``'s calls of imported functions to the files defining them."""
        for qual, line, spread, values, kwvalues in calls:
            hit = self.resolve(qual, caller)
            if hit is None or hit[0] == caller:
                continue
            target, func = hit
            self.incoming.setdefault(target, []).append(
                (func, str(caller), line, spread, values, kwvalues)
            )

    def resolve(self, qual: str, caller: Path) -> tuple[Path, str] | None:
        """(file, function name) for a call's qualified name, or None."""
        level = len(qual) - len(qual.lstrip("."))
        parts = qual[level:].split(".")
        func, mod = parts[-1], tuple(parts[:-1])
        if not func:
            return None
        if level:
            base = caller.parent
            for _ in range(level - 1):
                base = base.parent
            target = self._module(base, mod or ("__init__",))
            return (target, func) if target is not None else None
        if not mod:
            return None
        for base in (caller.parent, *self.bases):
            target = self._module(base, mod)
            if target is not None:
                return target, func
        return None

    def _module(self, base: Path, parts: tuple[str, ...]) -> Path | None:
        key = (base, parts)
        if key not in self._modules:
            found = None
            for candidate in (
                base.joinpath(*parts[:-1], parts[-1] + ".py"),
                base.joinpath(*parts, "__init__.py"),
            ):
                found = self.known.get(_key(candidate))
                if found is not None:
                    break
            self._modules[key] = found
        return self._modules[key]


def plain_calls(tree: ast.Module) -> list:
    """The calls of imported functions in a file with no framework code (nothing is known
    about their arguments, but they are calls the facts must agree with)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            head = "." * node.level + (node.module + "." if node.module else "")
            names.update((a.asname or a.name, head + a.name) for a in node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(import_bindings(node))
    out = []
    for node in ast.walk(tree):
        if type(node) is ast.Call:
            parts = dotted(node.func)
            if parts and parts[0] in names:
                qual = ".".join([names[parts[0]], *parts[1:]])
                kw = {k.arg: UNKNOWN for k in node.keywords if k.arg}
                out.append((qual, node.lineno, spreads(node), [UNKNOWN] * len(node.args), kw))
    return out
