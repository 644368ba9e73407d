"""NT9xx: what an engine could not look at. Reported, never silently skipped."""

from nantrap.findings import Category, Severity
from nantrap.traps import trap

trap(
    code="NT901",
    name="unreadable-source",
    category=Category.COVERAGE,
    severity=Severity.INFO,
    title="a file could not be linted (syntax error, not UTF-8, too large)",
    summary="The linter skipped a file it could not parse; the rest of the run went on.",
    mechanism="nantrap lint parses with Python's ast; it reports the parser's message.",
    fix="Fix the syntax error or exclude the file (`exclude` in [tool.nantrap]).",
    bad="def f(:\n    pass",
    good="def f():\n    pass",
)

trap(
    code="NT902",
    name="unsupported-op",
    category=Category.COVERAGE,
    severity=Severity.INFO,
    title="ops the range analysis does not know; their outputs got the unknown range",
    summary="""
Some graph nodes have no transfer function: their outputs are treated as any value of
the dtype, which is sound but can hide or cause findings downstream.""",
    mechanism="""
An unknown node's interval is the dtype's full range; every op after it is checked
against that.""",
    fix="Report the op names; `--strict` makes this an error.",
    bad="y = my_custom_op(x)  # no transfer function",
    good="y = torch.tanh(x)",
)

trap(
    code="NT903",
    name="unlocalized-nonfinite",
    category=Category.COVERAGE,
    severity=Severity.WARNING,
    title="a non-finite value was detected but its first op could not be pinned down",
    summary="""
The guard saw a NaN/Inf, but replaying the step did not reproduce it (nondeterminism,
data not captured, a compiled region), so no first bad op is named.""",
    mechanism="""
Localization replays the step from its snapshot with op tracing; it needs the same
inputs and a deterministic step.""",
    fix="""
Use the closure form (opt.step(closure)) so the step can be replayed exactly, or replay
the written bundle offline with nantrap.torch.replay.""",
    bad="loss.backward(); opt.step()",
    good="opt.step(closure)",
)
