import ast
import re

import pytest

from nantrap.findings import Category
from nantrap.traps import all_traps, get_trap, trap

TRAPS = list(all_traps())


@pytest.mark.parametrize("entry", TRAPS, ids=lambda t: t.code)
def test_entry_is_complete(entry):
    assert re.fullmatch(r"NT\d{3}", entry.code)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry.name)
    for field in ("title", "summary", "mechanism", "fix", "bad", "good"):
        assert getattr(entry, field).strip(), f"{entry.code}.{field} is empty"
    assert isinstance(entry.category, Category)


@pytest.mark.parametrize("entry", TRAPS, ids=lambda t: t.code)
def test_examples_are_python(entry):
    if entry.category is Category.COVERAGE and entry.code == "NT901":
        return  # its bad example is a syntax error on purpose
    ast.parse(entry.bad)
    ast.parse(entry.good)


def test_mechanisms_carry_numbers():
    for entry in TRAPS:
        if entry.category is not Category.COVERAGE:
            assert re.search(r"\d", entry.mechanism), f"{entry.code} mechanism has no number"


def test_seed_traps_are_present():
    assert get_trap("NT101").category is Category.DOMAIN
    assert get_trap("NT102").category is Category.CLIP_TRAP
    assert get_trap("NT203").category is Category.SATURATION
    assert get_trap("NT301").category is Category.DIVERGENCE
    assert "Nan in summary histogram" in get_trap("NT301").summary


def test_lookup_by_code_or_name_and_errors():
    assert get_trap("nt102") is get_trap("clip-before-log")
    with pytest.raises(KeyError, match="nantrap traps"):
        get_trap("NT999")


def test_registration_refuses_bad_codes_and_duplicates():
    base = dict(
        title="t", category=Category.DOMAIN, summary="s", mechanism="m", fix="f", bad="x", good="y"
    )
    with pytest.raises(ValueError, match="three digits"):
        trap(code="NT1", name="short-code", **base)
    with pytest.raises(ValueError, match="kebab-case"):
        trap(code="NT998", name="Not_Kebab", **base)
    with pytest.raises(ValueError, match="registered twice"):
        trap(code="NT101", name="another-name", **base)
