"""The trap catalog: every numerical trap nantrap knows, by code (``NT102``) and name.

Entries live in family modules (``math.py`` for NT1xx, ``precision.py`` NT2xx,
``training.py`` NT3xx, ``data.py`` NT4xx, ``coverage.py`` NT9xx); each is one ``trap(...)``
call. ``nantrap traps`` lists them; ``nantrap explain NT102`` prints one.

>>> get_trap("NT102").name
'clip-before-log'
>>> get_trap("clip-before-log").code
'NT102'
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from nantrap.findings import Category, Severity

__all__ = ["Trap", "all_traps", "get_trap", "trap"]

_CODE = re.compile(r"^NT\d{3}$")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_TRAPS: dict[str, Trap] = {}
_BY_NAME: dict[str, Trap] = {}
_MISSING = object()


@dataclass(frozen=True)
class Trap:
    """One catalog entry. ``bad``/``good`` are PyTorch; ``examples`` adds other frameworks."""

    code: str
    name: str  # kebab-case; names the pattern and reads as "allow <name>"
    title: str  # one line
    category: Category
    summary: str  # what goes wrong
    mechanism: str  # why, with the numbers
    fix: str  # how to fix it (the real fix, never a fake-loss clip)
    bad: str
    good: str
    severity: Severity = Severity.WARNING
    examples: dict[str, tuple[str, str]] = field(default_factory=dict)  # framework -> (bad, good)
    references: tuple[str, ...] = ()

    def explain(self) -> str:
        """The full plain-text explanation (what ``nantrap explain`` prints)."""
        lines = [
            f"{self.code} {self.name} [{self.category}]",
            self.title,
            "",
            "What goes wrong",
            _indent(self.summary),
            "",
            "Why",
            _indent(self.mechanism),
            "",
            "Fix",
            _indent(self.fix),
            "",
            "Bad (PyTorch)",
            _indent(self.bad),
            "",
            "Good (PyTorch)",
            _indent(self.good),
        ]
        for framework, (bad, good) in self.examples.items():
            lines += [
                "",
                f"Bad ({framework})",
                _indent(bad),
                "",
                f"Good ({framework})",
                _indent(good),
            ]
        if self.references:
            lines += ["", "References"] + [f"  - {r}" for r in self.references]
        return "\n".join(lines)


def trap(**fields) -> Trap:
    """Register a catalog entry; refuse malformed or duplicate codes and names."""
    entry = Trap(**fields)
    if not _CODE.match(entry.code):
        raise ValueError(f"trap code {entry.code!r} is not NT followed by three digits")
    if not _NAME.match(entry.name):
        raise ValueError(f"trap name {entry.name!r} is not kebab-case")
    for key, table in ((entry.code, _TRAPS), (entry.name, _BY_NAME)):
        if key in table:
            raise ValueError(f"trap {key!r} is registered twice")
    _TRAPS[entry.code] = entry
    _BY_NAME[entry.name] = entry
    return entry


def get_trap(code_or_name: str, default: object = _MISSING) -> Trap:
    """The entry for a code (``NT102``, case-insensitive) or a name (``clip-before-log``)."""
    _load()
    key = code_or_name.strip()
    found = _TRAPS.get(key.upper()) or _BY_NAME.get(key.lower())
    if found is not None:
        return found
    if default is not _MISSING:
        return default  # type: ignore[return-value]
    raise KeyError(f"no trap {code_or_name!r}; `nantrap traps` lists them")


def all_traps() -> Iterator[Trap]:
    """Every entry, ordered by code."""
    _load()
    return iter(sorted(_TRAPS.values(), key=lambda t: t.code))


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else "" for line in text.strip("\n").splitlines())


def _load() -> None:
    if _TRAPS:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
