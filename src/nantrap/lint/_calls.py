"""Facts into function parameters, from the call sites in the same file.

The walker records, at every call of a user function (a module-level or nested ``def``,
``self.method(...)``, a lambda bound to a name), the value of each argument bound to
each parameter (positional, keyword, or the default). A parameter's fact is the join of
those values: when every call site agrees (all pass a softmax output) the fact is
certain; when only some do, the hazardous fact is kept as a *maybe* (findings resting on
it are warnings). :func:`parameter_facts` builds the table the next walk binds; the
engine iterates walks to a fixed point, at most ``MAX_WALKS`` times.
"""

from __future__ import annotations

import ast
from dataclasses import replace

from nantrap.lint import _values as V
from nantrap.lint._values import UNKNOWN, CallSite, Value

MAX_WALKS = 4  # the first walk plus up to three rounds (chains of calls, recursion)
# Facts too common to carry into a parameter: any layer output is "linear", and helpers
# such as a VAE's ``reparameterize(mu, logvar)`` exp them by design.
_LOCAL_ONLY = frozenset({"linear"})

# A site's bound values: parameter name -> value; the call's line.
Site = tuple[int, dict[str, Value]]


def function_name(fn: ast.AST, call: ast.Call) -> str:
    """``cross_entropy``; a lambda by the name it is called through (``bce``)."""
    name = getattr(fn, "name", None)
    if name is None:
        func = call.func
        name = func.id if type(func) is ast.Name else getattr(func, "attr", "<lambda>")
    return name


def is_static(fn: ast.AST) -> bool:
    return any(
        isinstance(d, ast.Name) and d.id == "staticmethod"
        for d in getattr(fn, "decorator_list", ())
    )


def bind_call(
    fn: ast.AST,
    call: ast.Call,
    values: list[Value],
    kwvalues: dict[str, Value],
    defaults: dict[int, Value],
    skip: int,
) -> dict[str, Value]:
    """Parameter -> argument value for one call of ``fn`` (``skip``: a bound ``self``)."""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    starred = any(type(a) is ast.Starred for a in call.args)
    spread = any(k.arg is None for k in call.keywords)
    out: dict[str, Value] = {}
    for i, p in enumerate(positional[skip:], skip):
        j = i - skip
        if not starred and j < len(values):
            out[p.arg] = values[j]
        elif p.arg in kwvalues and i >= len(args.posonlyargs):
            out[p.arg] = kwvalues[p.arg]
        elif starred or spread or i < first_default:
            out[p.arg] = UNKNOWN
        else:
            out[p.arg] = defaults.get(id(args.defaults[i - first_default]), UNKNOWN)
    for p, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if p.arg in kwvalues:
            out[p.arg] = kwvalues[p.arg]
        elif spread or d is None:
            out[p.arg] = UNKNOWN
        else:
            out[p.arg] = defaults.get(id(d), UNKNOWN)
    return out


def merge_site(old: dict[str, Value] | None, new: dict[str, Value]) -> dict[str, Value]:
    """The same call node seen in two walks of its function: keep what is known."""
    if old is None:
        return new
    return {k: (v if v.kind or k not in old else old[k]) for k, v in new.items()}


def _hazard(v: Value) -> bool:
    return (bool(v.kind) and v.kind != "const") or v.half


def join_sites(param: str, name: str, sites: list[tuple[int, Value]], escaped: bool) -> Value:
    """One parameter's fact from the values passed at every call site (in line order).

    A value that was itself a maybe (a parameter passed on) keeps the fact a maybe.
    """
    acc = sites[0][1]
    for _, v in sites[1:]:
        acc = V.join(acc, v)
    if acc.kind or acc.half or _object(acc):
        line = next((ln for ln, v in sites if v.kind == acc.kind), sites[0][0])
        maybe = escaped or any(v.via is not None and v.via.maybe for _, v in sites)
        via = CallSite(param, name, line, maybe=maybe)
        return replace(acc, via=via, name=param)
    hazards = [(ln, v) for ln, v in sites if _hazard(v)]
    if not hazards:
        return UNKNOWN
    line, first = hazards[0]
    for _, v in hazards[1:]:
        if v.kind == first.kind:
            first = V.join(first, v)
    return replace(first, via=CallSite(param, name, line, maybe=True), name=param)


def parameter_facts(
    sites: dict[int, tuple[str, dict[int, Site]]], escaped: set[int]
) -> dict[int, dict[str, Value]]:
    """id(function) -> parameter -> its fact, for every function called in the file."""
    facts: dict[int, dict[str, Value]] = {}
    for key, (name, calls) in sites.items():
        ordered = sorted(calls.values(), key=lambda s: s[0])
        params = {p for _, bound in ordered for p in bound}
        table = {}
        for p in sorted(params):
            per_site = [(line, _carried(bound.get(p, UNKNOWN))) for line, bound in ordered]
            v = join_sites(p, name, per_site, key in escaped)
            if v is not UNKNOWN:
                table[p] = v
        if table:
            facts[key] = table
    return facts


def _object(v: Value) -> bool:
    """A model / layer / function passed around: what calling it returns is known."""
    return v.instance is not None or v.layer is not None or v.layer_out is not None


def _carried(v: Value) -> Value:
    return UNKNOWN if v.kind in _LOCAL_ONLY and not v.half else v


def worth_another_walk(facts: dict[int, dict[str, Value]], had_hits: bool) -> bool:
    """A hazard reached a parameter; or a finding may rest on a parameter a fact guards."""
    values = [v for table in facts.values() for v in table.values()]
    return any(_hazard(v) or _object(v) for v in values) or (had_hits and bool(values))


_WORDS = {
    "softmax": "a softmax output",
    "sigmoid": "a sigmoid output",
    "one_minus": "1 - a probability",
    "clip": "a clipped value",
    "linear": "a matmul/linear output (unbounded)",
    "exp": "an exp output",
    "const": "a constant",
}


def describe(v: Value) -> str:
    """``; `p` is a softmax output passed to `ce` at line 12`` for a finding's message."""
    via = v.via
    if v.kind:
        words = _WORDS.get(v.kind) or V.MAY_ZERO.get(v.kind) or f"a {v.kind} value"
    elif v.instance is not None:
        words = f"a `{v.instance.name}`"
    elif v.half:
        words = "a float16 value"
    else:
        words = "a layer"
    text = f"; `{via.param}` is {words} passed to `{via.function}` at line {via.line}"
    if via.maybe:
        text += " (other calls may pass other values)"
    return text
