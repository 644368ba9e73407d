"""Shared formatting: numbers, action text, merged action runs, evidence, source context."""

from __future__ import annotations

from nantrap.findings import Location
from nantrap.report._format import (
    action_text,
    fmt,
    grouped_actions,
    source_context,
    split_evidence,
)


def test_numbers():
    assert [fmt(x) for x in (0.000123456, 12, "nan", "-inf", None, True)] == [
        "0.0001235",
        "12",
        "NaN",
        "-Inf",
        "—",
        "True",
    ]


def test_actions_text_and_runs():
    roll = {
        "step": 9,
        "action": "rollback",
        "to_step": 0,
        "lr_before": 6.0,
        "lr_after": 3.0,
        "retries": 1,
    }
    assert action_text(roll) == "rolled back to step 0; lr 6 → 3 (retry 1)"
    warns = [{"step": s, "action": "warn"} for s in (4, 5, 6, 8)]
    assert grouped_actions([*warns, roll]) == [
        ("4–6", "warned and let the update through (3×)"),
        ("8", "warned and let the update through"),
        ("9", "rolled back to step 0; lr 6 → 3 (retry 1)"),
    ]


def test_evidence_split_into_tensor_rows_and_facts():
    stats = {
        "numel": 4,
        "dtype": "float16",
        "shape": [2, 2],
        "min": 0.0,
        "max": 65504.0,
        "zeros": 1,
        "negatives": 0,
        "nan": 0,
        "inf": 2,
    }
    rows, facts = split_evidence(
        {"inputs": [stats], "out": {"result": stats}, "lr": 0.5, "signals": ["grad_norm", "loss"]}
    )
    assert rows[0] == ["inputs[0]", "float16[2,2]", "0", "6.55e+04", "1", "0", "0", "2"]
    assert rows[1][0] == "out.result"
    assert facts == [("lr", "0.5"), ("signals", "grad_norm, loss")]


def test_source_context_reads_the_file_or_falls_back(tmp_path):
    src = tmp_path / "t.py"
    src.write_text("a = 1\nb = 2\nc = log(b)\nd = 4\n")
    ctx = source_context(Location(path=str(src), line=3), around=1)
    assert ctx == [(2, "b = 2", False), (3, "c = log(b)", True), (4, "d = 4", False)]
    rel = source_context(Location(path="t.py", line=1), roots=(tmp_path,), around=0)
    assert rel == [(1, "a = 1", True)]
    gone = Location(path=str(tmp_path / "gone.py"), line=7, source_line="x = log(p)")
    assert source_context(gone) == [(7, "x = log(p)", True)]
