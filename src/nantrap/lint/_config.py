"""Lint configuration: one frozen object, from arguments and ``[tool.nantrap]``.

``pyproject.toml``::

    [tool.nantrap]
    select = ["NT1", "NT2"]       # code prefixes; "ALL" for everything
    ignore = ["NT113"]
    exclude = ["legacy/**"]
    max-file-size = 2_000_000     # bytes; bigger files get an NT901 finding
    per-file-ignores = { "tests/*" = ["NT110"] }

Keys may also sit under ``[tool.nantrap.lint]``, which wins.
"""

from __future__ import annotations

import contextlib
import fnmatch
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nantrap.errors import ConfigError

DEFAULT_EXCLUDE = (
    ".git",
    ".hg",
    ".svn",
    ".tox",
    ".nox",
    ".venv",
    "venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "__pycache__",
    "node_modules",
    "build",
    "dist",
    ".eggs",
    ".ipynb_checkpoints",
)
_KEYS = {
    "select",
    "ignore",
    "extend-select",
    "exclude",
    "extend-exclude",
    "max-file-size",
    "per-file-ignores",
    "unsafe-fixes",
}


@dataclass(frozen=True)
class LintConfig:
    """What to check and where. Codes are matched by prefix, the longest match wins."""

    select: tuple[str, ...] = ("ALL",)
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    max_file_size: int = 2_000_000
    per_file_ignores: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unsafe_fixes: bool = False
    root: Path | None = None  # where the config came from (relative paths resolve here)

    def enabled(self, code: str, path: str | None = None) -> bool:
        ignore = self.ignore
        if path and self.per_file_ignores:
            rel = self._relative(path)
            for pattern, codes in self.per_file_ignores.items():
                if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(Path(rel).name, pattern):
                    ignore = ignore + codes
        return _match(code, self.select) > _match(code, ignore)

    def excluded(self, path: Path, base: Path | None = None) -> bool:
        """``path``, found under the walked folder ``base``, matches an exclude pattern.

        A pattern matches the file name, a folder name below ``base``, or the path relative
        to ``base`` or to the configuration's folder.
        """
        rels = [self._relative(str(path))] if self.root is not None else []
        if base is not None:
            with contextlib.suppress(ValueError):
                rels.append(str(path.relative_to(base)))
        for pattern in self.exclude:
            if fnmatch.fnmatch(path.name, pattern):
                return True
            for rel in rels:
                if fnmatch.fnmatch(rel, pattern) or pattern in Path(rel).parts[:-1]:
                    return True
        return False

    def _relative(self, path: str) -> str:
        if self.root is None:
            return path
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except (ValueError, OSError):  # outside the project: match the path as given
            return path

    def merged(self, **changes: Any) -> LintConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _match(code: str, prefixes: tuple[str, ...]) -> int:
    """Length of the longest prefix in ``prefixes`` that matches ``code`` (+1), 0 if none."""
    best = 0
    for p in prefixes:
        p = p.strip().upper()
        if p == "ALL":
            best = max(best, 1)
        elif p and code.startswith(p):
            best = max(best, len(p) + 1)
    return best


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.nantrap]`` table, from ``start`` up."""
    start = start.resolve()
    for directory in (start, *start.parents) if start.is_dir() else start.parents:
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            tool = _read_toml(candidate).get("tool", {})
            if isinstance(tool, dict) and "nantrap" in tool:
                return candidate
    return None


def load_config(path: Path | None, base: LintConfig | None = None) -> LintConfig:
    """Read ``[tool.nantrap]`` (and ``[tool.nantrap.lint]``) from a pyproject.toml."""
    base = base or LintConfig()
    if path is None:
        return base
    table = _read_toml(path).get("tool", {}).get("nantrap", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.nantrap] must be a table")
    options = {k: v for k, v in table.items() if k != "lint"}
    options.update(table.get("lint", {}) if isinstance(table.get("lint"), dict) else {})
    unknown = set(options) - _KEYS - {"guard", "analyze", "report"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [tool.nantrap]: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_KEYS))})"
        )
    changes: dict[str, Any] = {"root": path.parent}
    if "select" in options:
        changes["select"] = _codes(path, "select", options["select"])
    if "extend-select" in options:
        changes["select"] = changes.get("select", base.select) + _codes(
            path, "extend-select", options["extend-select"]
        )
    if "ignore" in options:
        changes["ignore"] = _codes(path, "ignore", options["ignore"])
    if "exclude" in options:
        changes["exclude"] = _strings(path, "exclude", options["exclude"])
    if "extend-exclude" in options:
        changes["exclude"] = changes.get("exclude", base.exclude) + _strings(
            path, "extend-exclude", options["extend-exclude"]
        )
    if "max-file-size" in options:
        size = options["max-file-size"]
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ConfigError(f"{path}: max-file-size must be a positive integer, got {size!r}")
        changes["max_file_size"] = size
    if "unsafe-fixes" in options:
        changes["unsafe_fixes"] = bool(options["unsafe-fixes"])
    if "per-file-ignores" in options:
        pfi = options["per-file-ignores"]
        if not isinstance(pfi, dict):
            raise ConfigError(f"{path}: per-file-ignores must be a table of glob = [codes]")
        changes["per_file_ignores"] = {
            str(k): _codes(path, f"per-file-ignores.{k}", v) for k, v in pfi.items()
        }
    return replace(base, **changes)


def _codes(path: Path, key: str, value: Any) -> tuple[str, ...]:
    items = _strings(path, key, value)
    for item in items:
        if item.upper() != "ALL" and not (item.upper().startswith("NT") and item[2:].isdigit()):
            raise ConfigError(f"{path}: {key}: {item!r} is not a code prefix like NT1 or NT101")
    return tuple(i.upper() for i in items)


def _strings(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {key} must be a list of strings, got {value!r}")
    return tuple(value)


def _read_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise ConfigError(f"{path}: reading TOML on Python 3.10 needs `tomli`") from exc
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
