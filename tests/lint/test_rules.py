"""Tests generated from every rule's VALID / INVALID examples, plus the house rules."""

from __future__ import annotations

import ast
import re

import pytest

from nantrap.lint import LintConfig, all_rules, fix_source, lint_source
from nantrap.lint._rule import Example, Rule
from nantrap.traps import get_trap

RULES = all_rules()
VALID = [(code, i, src) for code, cls in RULES.items() for i, src in enumerate(cls.VALID)]
INVALID = [(code, i, ex) for code, cls in RULES.items() for i, ex in enumerate(cls.INVALID)]
FIXES = [(code, i, ex) for code, i, ex in INVALID if ex.fixed is not None]
SECTIONS = ("What it does:", "Why is this bad?", "Example:", "Use instead:", "Fix safety:")


@pytest.mark.parametrize(("code", "i", "source"), VALID, ids=lambda x: str(x)[:12])
def test_valid_example_is_silent(code, i, source):
    assert lint_source(source) == []


@pytest.mark.parametrize(("code", "i", "example"), INVALID, ids=lambda x: str(x)[:12])
def test_invalid_example_fires_at_its_position(code, i, example: Example):
    findings = lint_source(example.source, config=LintConfig(select=(code,)))
    assert sorted((f.location.line, f.location.col) for f in findings) == sorted(example.hits)
    for f in findings:
        assert f.code == code and f.engine == "lint" and f.message and f.fix
        assert f.location.source_line == example.source.splitlines()[f.location.line - 1].strip()


@pytest.mark.parametrize(("code", "i", "example"), FIXES, ids=lambda x: str(x)[:12])
def test_fix_round_trip(code, i, example: Example):
    fixed, applied = fix_source(example.source)
    assert applied >= 1
    assert fixed == example.fixed
    ast.parse(fixed)
    assert code not in {f.code for f in lint_source(fixed)}
    assert fix_source(fixed) == (fixed, 0)  # idempotent


@pytest.mark.parametrize("code", list(RULES))
def test_rule_is_documented_and_registered(code):
    cls: type[Rule] = RULES[code]
    assert re.fullmatch(r"NT\d{3}", code) and get_trap(code).code == code
    doc = cls.__doc__ or ""
    for section in SECTIONS:
        assert section in doc, f"{code} docstring lacks {section!r}"
    assert cls.VALID and cls.INVALID
    assert cls.OPS or cls.NAMES
    for superseded in cls.SUPERSEDES:
        assert superseded in RULES
    safe = not doc.split("Fix safety:")[1].strip().startswith("No automatic fix")
    assert safe == any(ex.fixed is not None for ex in cls.INVALID), code


def test_a_second_rule_for_a_code_is_refused():
    with pytest.raises(ValueError, match="NT101 is defined twice"):

        class Again(Rule):
            CODE = "NT101"


def test_a_rule_must_name_a_catalog_entry():
    with pytest.raises(KeyError):

        class Unknown(Rule):
            CODE = "NT999"
