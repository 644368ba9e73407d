"""SARIF 2.1.0 rendering of a Report, for code-scanning UIs (GitHub, VS Code).

One run; ``tool.driver.rules`` holds the catalog entry of every code found; each result
has a physical location (1-based region, end column exclusive) and, where a rewrite
exists, a ``fixes`` entry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePath
from typing import Any

from nantrap import __version__
from nantrap.findings import Finding, Report, Severity
from nantrap.traps import get_trap

__all__ = ["SCHEMA", "VERSION", "render", "to_sarif"]

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
VERSION = "2.1.0"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def to_sarif(report: Report) -> dict[str, Any]:
    codes = sorted({f.code for f in report.findings})
    index = {code: i for i, code in enumerate(codes)}
    return {
        "$schema": SCHEMA,
        "version": VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "nantrap",
                        "version": __version__,
                        "informationUri": "https://github.com/nantrap/nantrap",
                        "rules": [_rule(code) for code in codes],
                    }
                },
                "results": [_result(f, index[f.code]) for f in report.findings],
                "columnKind": "unicodeCodePoints",
            }
        ],
    }


def render(report: Report) -> str:
    return json.dumps(to_sarif(report), indent=2, sort_keys=False) + "\n"


def _rule(code: str) -> dict[str, Any]:
    trap = get_trap(code, default=None)
    if trap is None:
        return {"id": code}
    return {
        "id": code,
        "name": trap.name,
        "shortDescription": {"text": trap.title},
        "fullDescription": {"text": " ".join(trap.summary.split())},
        "help": {"text": trap.explain()},
        "defaultConfiguration": {"level": _LEVEL[trap.severity]},
        "properties": {"category": str(trap.category)},
    }


def _uri(path: str | None) -> str:
    if not path:
        return "stdin"
    p = PurePath(path)
    return Path(p).resolve().as_uri() if p.is_absolute() else p.as_posix()


def _region(line, col, end_line, end_col) -> dict[str, int]:
    region = {"startLine": max(int(line or 1), 1)}
    if col:
        region["startColumn"] = int(col)
    if end_line:
        region["endLine"] = int(end_line)
    if end_col:
        region["endColumn"] = int(end_col)
    return region


def _result(f: Finding, rule_index: int) -> dict[str, Any]:
    loc = f.location
    artifact = {"uri": _uri(loc.path)}
    if loc.path and not PurePath(loc.path).is_absolute():
        artifact["uriBaseId"] = "%SRCROOT%"
    region = _region(loc.line, loc.col, loc.end_line, loc.end_col)
    if loc.source_line:
        region["snippet"] = {"text": loc.source_line}
    text = f.message + (f"\nfix: {f.fix}" if f.fix else "")
    result: dict[str, Any] = {
        "ruleId": f.code,
        "ruleIndex": rule_index,
        "level": _LEVEL.get(f.severity, "warning"),
        "message": {"text": text},
        "locations": [{"physicalLocation": {"artifactLocation": artifact, "region": region}}],
    }
    props = {
        k: v if not isinstance(v, float) or math.isfinite(v) else str(v)
        for k, v in f.evidence.items()
        if isinstance(v, (str, int, float, bool))
    }
    if props:
        result["properties"] = props
    if f.edits:
        result["fixes"] = [
            {
                "description": {"text": f.fix or "rewrite"},
                "artifactChanges": [
                    {
                        "artifactLocation": dict(artifact),
                        "replacements": [
                            {
                                "deletedRegion": _region(e.line, e.col, e.end_line, e.end_col),
                                "insertedContent": {"text": e.replacement},
                            }
                            for e in f.edits
                        ],
                    }
                ],
            }
        ]
    return result
