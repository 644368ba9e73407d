"""Facts into function parameters, from their call sites (in the file; and, for
``lint_paths``, in the other files linted with it: see ``_imports``).

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
# The facts carried into a parameter: those the rules report on, and the guards. Not
# "linear" (any layer output; helpers such as a VAE's ``reparameterize(mu, logvar)`` exp
# it by design), nor facts no rule reads (random, a sum, a max...): they would only cost
# walks.
_HAZARDS = frozenset(
    V.PROB
    | set(V.MAY_ZERO)
    | {"one_minus", "clip", "exp", "sum_exp", "one_plus_exp", "diff", "square", "unit"}
    | {"unitdot", "cos", "tanh", "ratio", "sqrt"}
)
_GUARDS = frozenset({"const", "logprob"})

# One call: its line, parameter name -> value, the calling file (None: this file).
Site = tuple[int, dict[str, Value], str | None]


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


def spreads(call: ast.Call) -> tuple[bool, bool]:
    """(``f(*args)``, ``f(**kw)``): arguments whose binding is unknown."""
    return (
        any(type(a) is ast.Starred for a in call.args),
        any(k.arg is None for k in call.keywords),
    )


def bind_call(
    fn: ast.AST,
    spread_args: tuple[bool, bool],
    values: list[Value],
    kwvalues: dict[str, Value],
    defaults: dict[int, Value],
    skip: int,
) -> dict[str, Value]:
    """Parameter -> argument value for one call of ``fn`` (``skip``: a bound ``self``)."""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    starred, spread = spread_args
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
    return v.kind in _HAZARDS or v.half


def join_sites(
    param: str, name: str, sites: list[tuple[int, Value, str | None]], escaped: bool
) -> Value:
    """One parameter's fact from the values passed at every call site (in line order).

    A value that was itself a maybe (a parameter passed on) keeps the fact a maybe.
    """
    acc = sites[0][1]
    for _, v, _ in sites[1:]:
        acc = V.join(acc, v)
    if acc.kind or acc.half or _object(acc):
        line, _, path = next((s for s in sites if s[1].kind == acc.kind), sites[0])
        maybe = escaped or any(v.via is not None and v.via.maybe for _, v, _ in sites)
        via = CallSite(param, name, line, maybe=maybe, path=path, what=words(acc))
        return replace(acc, via=via, name=param)
    hazards = [s for s in sites if _hazard(s[1])]
    if not hazards:
        return UNKNOWN
    line, first, path = hazards[0]
    for _, v, _ in hazards[1:]:
        if v.kind == first.kind:
            first = V.join(first, v)
    via = CallSite(param, name, line, maybe=True, path=path, what=words(first))
    return replace(first, via=via, name=param)


def parameter_facts(
    sites: dict[int, tuple[str, dict[int, Site]]], escaped: set[int]
) -> dict[int, dict[str, Value]]:
    """id(function) -> parameter -> its fact, for every function called in the file."""
    facts: dict[int, dict[str, Value]] = {}
    for key, (name, calls) in sites.items():
        ordered = sorted(calls.values(), key=lambda s: (s[2] is not None, s[2] or "", s[0]))
        params = {p for _, bound, _ in ordered for p in bound}
        table = {}
        for p in sorted(params):
            per_site = [(ln, _carried(bound.get(p, UNKNOWN)), path) for ln, bound, path in ordered]
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
    if not v.kind or v.kind in _HAZARDS or v.kind in _GUARDS:
        return v
    return Value(half=True, fw=v.fw) if v.half else UNKNOWN


def portable(v: Value) -> Value:
    """A value passed to another file: its facts, without this file's nodes and lines."""
    v = _carried(v)
    if not _hazard(v):
        return UNKNOWN
    return replace(
        v,
        node=None,
        inner=None,
        line=0,
        name=None,
        items=None,
        func=None,
        instance=None,
        layer=None,
        layer_out=None,
    )


def external_sites(
    tree: ast.Module, calls: list[tuple[str, str, int, tuple, list, dict]]
) -> dict[int, tuple[str, dict[int, Site]]]:
    """Sites of this module's top-level functions, from calls in other files:
    ``(function name, calling path, line, spreads, values, kwvalues)``."""
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defaults = {
        id(d): V.const(float(d.value), d)
        for fn in defs.values()
        for d in (*fn.args.defaults, *(d for d in fn.args.kw_defaults if d is not None))
        if type(d) is ast.Constant and type(d.value) in (int, float)
    }
    out: dict[int, tuple[str, dict[int, Site]]] = {}
    for i, (name, path, line, spread, values, kwvalues) in enumerate(calls):
        fn = defs.get(name)
        if fn is None:
            continue
        bound = bind_call(fn, spread, values, kwvalues, defaults, 0)
        out.setdefault(id(fn), (name, {}))[1][-1 - i] = (line, bound, path)
    return out


def merged(
    a: dict[int, tuple[str, dict[int, Site]]], b: dict[int, tuple[str, dict[int, Site]]]
) -> dict[int, tuple[str, dict[int, Site]]]:
    out = dict(a)
    for key, (name, sites) in b.items():
        mine = out.get(key)
        out[key] = (mine[0], {**mine[1], **sites}) if mine else (name, sites)
    return out


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


def words(v: Value) -> str:
    """A parameter's fact in words: ``a softmax output``."""
    if v.kind:
        return _WORDS.get(v.kind) or V.MAY_ZERO.get(v.kind) or f"a {v.kind} value"
    if v.instance is not None:
        return f"a `{v.instance.name}`"
    return "a float16 value" if v.half else "a layer"


def describe(v: Value) -> str:
    """``; `p` is a softmax output passed to `ce` at line 12`` for a finding's message."""
    via = v.via
    where = f"{via.path}:{via.line}" if via.path else f"line {via.line}"
    text = f"; `{via.param}` is {via.what} passed to `{via.function}` at {where}"
    if via.maybe:
        text += " (other calls may pass other values)"
    return text
