"""The neutral op table: one entry per numerical op, shared by lint, analyze and guard.

Each :class:`Op` knows its names in every framework (Python API names for the linter,
graph names for the analyser and the guard's tracer), its domain, its gradient hazard,
its natural output range and the safe alternative. Entries live in ``_table.py``; adding
an op is one ``op(...)`` call there.

>>> lookup("aten", "aten.log.default").name
'log'
>>> lookup("onnx", "Softmax").name
'softmax'
>>> get_op("sqrt").grad_hazard
'slope 1/(2*sqrt(x)) is infinite at x = 0'
"""

from __future__ import annotations

from nantrap.ops._model import FRAMEWORKS, Domain, Kind, Op
from nantrap.ops._registry import all_ops, get_op, lookup, lookup_api

__all__ = ["FRAMEWORKS", "Domain", "Kind", "Op", "all_ops", "get_op", "lookup", "lookup_api"]
