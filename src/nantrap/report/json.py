"""JSON rendering of a Report: the schema-versioned ``Report.to_dict()``, keys sorted."""

from __future__ import annotations

import json

from nantrap.findings import Report

__all__ = ["render"]


def render(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
