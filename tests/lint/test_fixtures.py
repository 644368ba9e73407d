"""Fixture files with inline expectations, bugbear style.

A line that should fire ends with ``# NT101: 13`` (code: 1-based column); several are
separated by commas. Every other line must stay silent. ``# OPTIONS: select=NT1`` on
the first lines sets the configuration.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nantrap.lint import LintConfig, lint_source

FIXTURES = Path(__file__).parent / "fixtures"
_EXPECT = re.compile(r"(NT\d{3}): (\d+)")


def expectations(source: str) -> list[tuple[int, str, int]]:
    out = []
    for n, line in enumerate(source.splitlines(), 1):
        if "#" in line:
            comment = line[line.index("# NT") :] if "# NT" in line else ""
            out += [(n, code, int(col)) for code, col in _EXPECT.findall(comment)]
    return sorted(out)


def found(path: Path) -> list[tuple[int, str, int]]:
    source = path.read_text()
    findings = lint_source(source, str(path), LintConfig())
    return sorted((f.location.line, f.code, f.location.col) for f in findings)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.py")), ids=lambda p: p.stem)
def test_fixture(path: Path):
    assert found(path) == expectations(path.read_text())


def test_every_rule_has_a_fixture_line():
    from nantrap.lint import all_rules

    seen = {code for p in FIXTURES.glob("*.py") for _, code, _ in expectations(p.read_text())}
    assert set(all_rules()) <= seen
