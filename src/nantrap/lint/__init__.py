"""``nantrap lint``: find numerical traps in Python source before anything runs.

>>> from nantrap.lint import lint_source
>>> src = "import torch\\ny = torch.log(torch.softmax(z, dim=1))\\n"
>>> [f.code for f in lint_source(src)]
['NT101']
>>> fix_source(src)[0].splitlines()[1]
'y = torch.log_softmax(z, dim=1)'

Rules live one per module in ``nantrap/lint/rules/``; see ``nantrap.lint.all_rules()``.
"""

from __future__ import annotations

from nantrap.lint._config import LintConfig, find_pyproject, load_config
from nantrap.lint._fix import apply_edits, unified_diff
from nantrap.lint._rule import Example, Hit, OpCall, Rule, all_rules, get_rule
from nantrap.lint._run import (
    discover,
    fix_file,
    fix_source,
    lint_file,
    lint_notebook,
    lint_paths,
    lint_source,
)

__all__ = [
    "Example",
    "Hit",
    "LintConfig",
    "OpCall",
    "Rule",
    "all_rules",
    "apply_edits",
    "discover",
    "find_pyproject",
    "fix_file",
    "fix_source",
    "get_rule",
    "lint_file",
    "lint_notebook",
    "lint_paths",
    "lint_source",
    "load_config",
    "unified_diff",
]
