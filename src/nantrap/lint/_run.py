"""Linting sources, files and trees; fixing them. Failures become NT901 findings."""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from nantrap.findings import Edit, Finding, Location, Report
from nantrap.lint._config import LintConfig
from nantrap.lint._engine import SourceFile, walk
from nantrap.lint._fix import apply_edits
from nantrap.lint._imports import Project, plain_calls
from nantrap.lint._notebook import Notebook, cell_sources, parse_notebook
from nantrap.lint._rule import Hit, Rule, all_rules
from nantrap.traps import get_trap

_SUPPRESS = re.compile(r"#\s*(?:nantrap:\s*ignore|noqa)(?!-)(?:\s*[:\[]\s*([A-Za-z0-9,\s]+)\]?)?")
_IGNORE_FILE = re.compile(r"^#\s*nantrap:\s*ignore-file\b", re.M)
_TRIGGERS = re.compile(r"torch|tensorflow|keras|jax|numpy|\bnp\b|\btf\b|\bF\b|\bK\b")


@dataclass
class _Rules:
    by_op: dict[str, list[Rule]]
    by_name: dict[str, list[Rule]]
    supersedes: dict[str, tuple[str, ...]]


def _rules(config: LintConfig, path: str | None) -> _Rules:
    by_op: dict[str, list[Rule]] = {}
    by_name: dict[str, list[Rule]] = {}
    supersedes = {}
    for code, cls in all_rules().items():
        if not config.enabled(code, path):
            continue
        rule = cls()
        for op in cls.OPS:
            by_op.setdefault(op, []).append(rule)
        for name in cls.NAMES:
            by_name.setdefault(name, []).append(rule)
        supersedes[code] = cls.SUPERSEDES
    return _Rules(by_op, by_name, supersedes)


def lint_source(
    source: str, path: str = "<string>", config: LintConfig | None = None
) -> list[Finding]:
    """Findings for one module's source text, sorted by position. Never raises."""
    return _lint_text(source, path, config or LintConfig())


def _lint_text(
    source: str, path: str, config: LintConfig, calls: list | None = None, sink=None
) -> list[Finding]:
    """``lint_source`` with the project pass's inputs (calls from other files) and output
    (``sink(calls)`` receives this file's calls of imported functions)."""
    try:
        return _lint(source, path, config, calls, sink)
    except (SyntaxError, ValueError) as exc:
        return _unreadable(path, config, _syntax_message(exc), getattr(exc, "lineno", None))
    except RecursionError:
        return _unreadable(path, config, "expressions nested too deeply to analyse")
    except MemoryError:
        return _unreadable(path, config, "ran out of memory while analysing")
    except Exception as exc:  # never crash on any input: report it and go on
        return _unreadable(path, config, f"internal error ({type(exc).__name__}: {exc})")


def _lint(source: str, path: str, config: LintConfig, calls=None, sink=None) -> list[Finding]:
    if _IGNORE_FILE.search(source):
        return []
    tree = ast.parse(source, filename=path)
    if not _TRIGGERS.search(source):
        if sink is not None:
            sink(plain_calls(tree))
        return []
    rules = _rules(config, path)
    file = SourceFile(path, source, tree)
    walker = walk(file, tree, rules.by_op, rules.by_name, calls, outgoing=sink is not None)
    if sink is not None:
        sink(walker.outgoing)
    findings = []
    seen = set()
    for rule, hit in walker.hits:
        key = (rule.CODE, id(hit.node))
        if key in seen:
            continue
        seen.add(key)
        finding = _finding(file, rule.CODE, hit)
        if not _suppressed(file, finding):
            findings.append(finding)
    findings = _drop_superseded(findings, rules.supersedes)
    return sorted(findings, key=lambda f: (f.location.line, f.location.col, f.code))


def _finding(file: SourceFile, code: str, hit: Hit) -> Finding:
    node = hit.node
    line, end_line = node.lineno, node.end_lineno or node.lineno
    col = file.col(line, node.col_offset) + 1
    end_col = file.col(end_line, node.end_col_offset or 0) + 1
    edits = ()
    if hit.replacement is not None:
        edits = (Edit(line, col, end_line, end_col, hit.replacement),)
    trap = get_trap(code)
    return Finding(
        code=code,
        message=hit.message,
        location=Location(
            path=file.path,
            line=line,
            col=col,
            end_line=end_line,
            end_col=end_col,
            source_line=file.line(line).strip(),
        ),
        severity=hit.severity or trap.severity,
        evidence=hit.evidence,
        fix=hit.fix,
        edits=edits,
        fix_safe=hit.safe,
        engine="lint",
    )


def _suppressed(file: SourceFile, finding: Finding) -> bool:
    loc = finding.location
    for n in {loc.line, loc.end_line}:
        text = file.line(n or 0)
        if "#" not in text:
            continue
        for m in _SUPPRESS.finditer(text):
            codes = m.group(1)
            if not codes or not codes.strip():
                return True
            if any(
                finding.code.startswith(c.strip().upper()) for c in codes.split(",") if c.strip()
            ):
                return True
    return False


def _drop_superseded(findings: list[Finding], supersedes: dict) -> list[Finding]:
    def inside(a: Location, b: Location) -> bool:
        return (a.line, a.col) >= (b.line, b.col) and (a.end_line, a.end_col) <= (
            b.end_line,
            b.end_col,
        )

    out = []
    for f in findings:
        dropped = any(
            f.code in supersedes.get(g.code, ()) and inside(f.location, g.location)
            for g in findings
            if g is not f
        )
        if not dropped:
            out.append(f)
    return out


def _syntax_message(exc: Exception) -> str:
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno}, column {exc.offset})" if exc.lineno else ""
        return f"not valid Python: {exc.msg}{where}"
    return f"cannot parse: {exc}"


def _unreadable(path: str, config: LintConfig, why: str, line: int | None = None) -> list[Finding]:
    if not config.enabled("NT901", path):
        return []
    return [
        Finding(
            code="NT901",
            message=f"could not lint this file: {why}",
            location=Location(path=path, line=line or 1, col=1),
            severity=get_trap("NT901").severity,
            fix="fix the file, or exclude it (exclude in [tool.nantrap])",
            engine="lint",
        )
    ]


# ---- files ----------------------------------------------------------------------------------
def read_source(path: Path, config: LintConfig) -> tuple[str | None, list[Finding]]:
    """The file's text, or None and an NT901 finding (too large, not UTF-8, unreadable)."""
    name = str(path)
    try:
        size = path.stat().st_size
        if size > config.max_file_size:
            return None, _unreadable(
                name,
                config,
                f"{size:,} bytes is over the {config.max_file_size:,}-byte limit "
                "(max-file-size in [tool.nantrap])",
            )
        raw = path.read_bytes()
    except OSError as exc:
        return None, _unreadable(name, config, f"cannot read it ({exc.strerror or exc})")
    try:
        if path.suffix == ".ipynb":
            return raw.decode("utf-8"), []
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        text = raw.decode(encoding)
        return text[1:] if text.startswith("\ufeff") else text, []
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
        return None, _unreadable(name, config, f"not UTF-8 (or its declared encoding): {reason}")


def lint_file(path: Path | str, config: LintConfig | None = None) -> list[Finding]:
    """Findings for one .py or .ipynb file. Never raises."""
    config = config or LintConfig()
    path = Path(path)
    text, problems = read_source(path, config)
    if text is None:
        return problems
    if path.suffix == ".ipynb":
        return lint_notebook(text, str(path), config)[0]
    return lint_source(text, str(path), config)


def lint_notebook(
    text: str, path: str, config: LintConfig
) -> tuple[list[Finding], Notebook | None]:
    """Findings with cell-relative lines (``evidence["cell"]``) and the parsed notebook."""
    try:
        nb = parse_notebook(text)
    except ValueError as exc:
        return _unreadable(path, config, f"not a readable notebook: {exc}"), None
    findings = lint_source(nb.source, path, config)
    return [_to_cell(f, nb) for f in findings], nb


def _to_cell(f: Finding, nb: Notebook) -> Finding:
    loc = f.location
    cell, line = nb.locate(loc.line or 1)
    _, end_line = nb.locate(loc.end_line or loc.line or 1)
    edits = tuple(
        replace(e, line=nb.locate(e.line)[1], end_line=nb.locate(e.end_line)[1]) for e in f.edits
    )
    evidence = {**f.evidence, "cell": cell, "notebook_line": loc.line}
    return replace(
        f,
        location=replace(loc, line=line, end_line=end_line),
        evidence=evidence,
        edits=edits,
    )


def discover(paths: Iterable[Path], config: LintConfig) -> Iterator[Path]:
    """Python files and notebooks under ``paths`` (explicit files are always included)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(_walk(path, config, path))
        else:
            yield path


def _walk(root: Path, config: LintConfig, base: Path) -> Iterator[Path]:
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        if config.excluded(entry, base):
            continue
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk(entry, config, base)
        elif entry.suffix in (".py", ".ipynb") and entry.is_file():
            yield entry


def lint_paths(paths: Iterable[Path | str], config: LintConfig | None = None) -> Report:
    """Lint every file under ``paths`` as one project: a function imported from another
    of these files (``from .losses import cross_entropy``) gets facts into its parameters
    from the calls there too (one round: the callee's file is linted again with them)."""
    config = config or LintConfig()
    roots = [Path(p) for p in paths]
    files = list(discover(roots, config))
    project = Project(roots, files)
    found: dict[Path, list[Finding]] = {}
    for path in files:
        if path.suffix == ".py":
            found[path] = _lint_path(path, config, sink=partial(project.add, path))
        else:
            found[path] = lint_file(path, config)
    for path, calls in project.incoming.items():
        found[path] = _lint_path(path, config, calls=calls)
    report = Report(engine="lint")
    for path in files:
        report.extend(found[path])
    report.meta.update(files=len(files))
    return report


def _lint_path(path: Path, config: LintConfig, calls=None, sink=None) -> list[Finding]:
    text, problems = read_source(path, config)
    if text is None:
        return problems
    return _lint_text(text, str(path), config, calls, sink)


# ---- fixing -----------------------------------------------------------------------------------
def fix_source(
    source: str, path: str = "<string>", config: LintConfig | None = None, *, unsafe: bool = False
) -> tuple[str, int]:
    """Apply fixes until none is left (at most 10 rounds); (new source, fixes applied).

    Only safe fixes unless ``unsafe``; a round whose result does not parse is discarded.
    """
    config = config or LintConfig()
    total = 0
    for _ in range(10):
        findings = lint_source(source, path, config)
        edits = [e for f in findings if f.fix_safe or unsafe for e in f.edits]
        if not edits:
            break
        new, applied = apply_edits(source, edits)
        try:
            ast.parse(new)
        except (SyntaxError, ValueError):
            break
        if new == source:
            break
        source, total = new, total + applied
    return source, total


def fix_file(
    path: Path, config: LintConfig | None = None, *, unsafe: bool = False
) -> tuple[str, str, int]:
    """(old text, new text, fixes) for a file; notebooks keep their JSON layout."""
    config = config or LintConfig()
    text, _problems = read_source(path, config)
    if text is None:
        return "", "", 0
    if path.suffix != ".ipynb":
        new, n = fix_source(text, str(path), config, unsafe=unsafe)
        return text, new, n
    try:
        nb = parse_notebook(text)
    except ValueError:
        return text, text, 0
    new_source, n = fix_source(nb.source, str(path), config, unsafe=unsafe)
    if not n:
        return text, text, 0
    data = cell_sources(nb, new_source)
    if data is None:
        return text, text, 0
    return text, json.dumps(data, indent=1, ensure_ascii=False) + "\n", n
