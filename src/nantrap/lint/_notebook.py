"""Jupyter notebooks: lint the code cells as one module, report cell-relative lines.

Cells are joined in order (so a softmax in cell 2 is known in cell 5); IPython magics
(``%time``, ``!pip``) become blank lines. Cells are numbered from 1 over all cells, as
they appear in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Notebook:
    data: dict
    source: str  # code cells joined, magics blanked
    lines: list[tuple[int, int]]  # global line (index) -> (cell number, line in cell)
    cells: dict[int, int]  # cell number -> index into data["cells"]

    def locate(self, line: int) -> tuple[int, int]:
        if 0 < line <= len(self.lines):
            return self.lines[line - 1]
        return (0, line)


def parse_notebook(text: str) -> Notebook:
    """Raise ValueError if ``text`` is not a notebook."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError("not a Jupyter notebook (no 'cells' list)")
    parts: list[str] = []
    lines: list[tuple[int, int]] = []
    cells: dict[int, int] = {}
    for index, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        number = index + 1
        cells[number] = index
        for i, line in enumerate(src.split("\n")):
            stripped = line.lstrip()
            if stripped.startswith(("%", "!")) or (stripped.endswith("?") and " " not in stripped):
                line = ""
            parts.append(line)
            lines.append((number, i + 1))
    return Notebook(data, "\n".join(parts) + "\n", lines, cells)


def cell_sources(nb: Notebook, fixed: str) -> dict | None:
    """The notebook with code cells replaced from ``fixed`` (same line layout), or None."""
    new_lines = fixed.split("\n")
    if new_lines and new_lines[-1] == "":
        new_lines = new_lines[:-1]
    if len(new_lines) != len(nb.lines):
        return None
    per_cell: dict[int, list[str]] = {}
    for (number, _), line in zip(nb.lines, new_lines, strict=False):
        per_cell.setdefault(number, []).append(line)
    data = json.loads(json.dumps(nb.data))
    for number, new in per_cell.items():
        cell = data["cells"][nb.cells[number]]
        src = cell.get("source", "")
        old = "".join(src) if isinstance(src, list) else str(src)
        old_lines = old.split("\n")
        merged = [
            o if n == "" and o.lstrip().startswith(("%", "!")) else n
            for o, n in zip(old_lines, new, strict=False)
        ]
        text = "\n".join(merged)
        if isinstance(src, list):
            cell["source"] = [ln + "\n" for ln in text.split("\n")[:-1]] + (
                [text.split("\n")[-1]] if text.split("\n")[-1] else []
            )
        else:
            cell["source"] = text
    return data
