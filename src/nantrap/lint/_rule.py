"""The rule base class, its registry and what a rule sees (an :class:`OpCall`).

A rule is one module in ``nantrap/lint/rules/`` holding one :class:`Rule` subclass:
``CODE`` (a catalog entry), the neutral ops (``OPS``) or API names (``NAMES``) it looks
at, a ``check(call)`` that yields :class:`Hit` s, and ``VALID`` / ``INVALID`` examples
that become tests. Subclassing registers the rule; a second rule for a code is refused.
Suppression, selection and locations are the engine's job, never a rule's.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from nantrap.findings import Severity
from nantrap.lint._values import UNKNOWN, Value

if TYPE_CHECKING:
    from nantrap.lint._engine import Walker

__all__ = ["Example", "Hit", "OpCall", "Rule", "all_rules", "get_rule"]

_RULES: dict[str, type[Rule]] = {}
DIFFERENTIABLE = frozenset({"torch", "tf", "keras", "jax"})


@dataclass(frozen=True)
class Example:
    """An INVALID example: source, the expected (line, col) hits, and the fixed source."""

    source: str
    hits: tuple[tuple[int, int], ...] = ()
    fixed: str | None = None


@dataclass(frozen=True)
class Hit:
    """What a rule reports; the engine turns it into a Finding."""

    node: ast.AST
    message: str
    fix: str | None = None
    replacement: str | None = None  # new text for ``node``'s span
    safe: bool = False  # the replacement preserves semantics (applied by --fix)
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None  # None: the catalog entry's


@dataclass
class OpCall:
    """One application of an op in the source, with what is known about its operands.

    ``operands[0]`` is the receiver for Tensor methods (``p.log()``) and the left side of
    a binary operator (``a / b``).
    """

    op: str | None  # neutral op name, or None for NAMES-matched calls
    qual: str  # canonical API name (``torch.log``, ``Tensor.log``, ``operator./``)
    node: ast.AST
    operands: list[ast.expr]
    values: list[Value]
    keywords: dict[str, ast.expr]
    kwvalues: dict[str, Value]
    fw: str | None
    method: bool
    walker: Walker
    read: list[Value] = field(default_factory=list)  # what the rule looked at, in order

    def operand(self, i: int, kw: str | None = None) -> tuple[ast.expr | None, Value]:
        if i < len(self.operands):
            self.read.append(self.values[i])
            return self.operands[i], self.values[i]
        if kw is not None and kw in self.keywords:
            self.read.append(self.kwvalues[kw])
            return self.keywords[kw], self.kwvalues[kw]
        return None, UNKNOWN

    def value_of(self, node: ast.AST) -> Value:
        """The value the engine computed for a sub-expression of this call."""
        v = self.walker.values.get(id(node), UNKNOWN)
        self.read.append(v)
        return v

    @property
    def differentiable(self) -> bool:
        """On a gradient path: a framework with autodiff, outside ``no_grad``."""
        return self.fw in DIFFERENTIABLE and not self.walker.no_grad

    @property
    def in_guard(self) -> bool:
        """Inside ``where(...)`` / ``nan_to_num(...)`` / a conditional that tests it."""
        return self.walker.guard_depth > 0

    @property
    def negated(self) -> bool:
        """Inside a unary minus (``-sum(y * log(p))``)."""
        return self.walker.neg_depth > 0

    @property
    def in_product(self) -> bool:
        """Inside an operand of a product (``y * log(p)``)."""
        return self.walker.mul_depth > 0

    def tested(self, node: ast.AST | None) -> bool:
        """A name in ``node`` was compared in an enclosing ``if`` / ``assert`` / ``where``."""
        return node is not None and self.walker.is_tested(node)

    def text(self, node: ast.AST) -> str:
        return self.walker.file.text(node)

    def alias(self, qualified: str) -> str | None:
        """How this file spells a qualified name (``F`` for torch.nn.functional), or None."""
        return self.walker.file.alias(qualified)

    def hit(self, message: str, node: ast.AST | None = None, **kw: Any) -> Hit:
        return Hit(node if node is not None else self.node, message, **kw)


class Rule:
    """Base class; subclasses register themselves. See ``rules/`` for the house pattern."""

    CODE: ClassVar[str]
    OPS: ClassVar[tuple[str, ...]] = ()  # neutral op names this rule looks at
    NAMES: ClassVar[tuple[str, ...]] = ()  # canonical API names (for non-op calls)
    SUPERSEDES: ClassVar[tuple[str, ...]] = ()  # codes this rule's hit replaces on its span
    VALID: ClassVar[tuple[str, ...]] = ()
    INVALID: ClassVar[tuple[Example, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("CODE")
        if code is None:
            raise TypeError(f"lint rule {cls.__name__} has no CODE")
        if code in _RULES:
            raise ValueError(f"lint rule {code} is defined twice ({_RULES[code].__name__})")
        from nantrap.traps import get_trap

        get_trap(code)  # every rule is a catalog entry
        _RULES[code] = cls

    def check(self, call: OpCall) -> Iterator[Hit]:
        raise TypeError(f"{type(self).__name__}.check is not defined")


def all_rules() -> MappingProxyType:
    """Code -> rule class, for every registered rule (the rules package is imported)."""
    import nantrap.lint.rules  # noqa: F401  (registers every rule module)

    return MappingProxyType(dict(sorted(_RULES.items())))


def get_rule(code: str) -> type[Rule]:
    return all_rules()[code.upper()]
