"""The walker: one pass over a module, in statement order, tracking value facts.

Each scope (module, function, lambda) keeps a table name -> :class:`Value`. Calls are
resolved through the imports to canonical API names, then to neutral ops
(``nantrap.ops``); each op application is handed to the rules registered for it and its
result value is computed by the transfer table in ``_values``. User functions, classes
and ``nn.Module`` instances get their return value summarised lazily (a quiet walk of
the callee), so ``y = model(x)`` knows that ``forward`` returns a sigmoid.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import replace

from nantrap.findings import Severity
from nantrap.lint import _calls as C
from nantrap.lint import _values as V
from nantrap.lint._names import canonical, dotted, framework_of, import_bindings, lookup
from nantrap.lint._rule import Hit, OpCall, Rule
from nantrap.lint._values import UNKNOWN, Value

_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
POSITIVE_UNKNOWN = 5e-324  # a lower bound that is > 0 but not a literal (``min=eps``)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Tensor methods that only exist on tensors with this many positional arguments.
_UNARY = _words(
    "log log2 log10 log1p exp expm1 sqrt rsqrt sigmoid tanh relu abs square acos asin "
    "atanh cosh sinh reciprocal neg"
)
_BINARY = frozenset(["pow", "div", "matmul", "add", "sub", "mul", "maximum"])
_ANY = _words("sum mean std var norm amax amin logsumexp count_nonzero clip")
_DIM = frozenset({"softmax", "log_softmax"})

# Calls that return their first operand's value unchanged (shape, device, dtype moves).
_SAME = _words(
    "float double detach clone cpu cuda contiguous view reshape squeeze unsqueeze "
    "flatten permute transpose expand expand_as view_as t numpy item to type astype "
    "parameters identity stop_gradient expand_dims convert_to_tensor asarray array "
    "cast squeeze_ unsqueeze_ requires_grad_ tolist tril triu flip roll repeat tile narrow "
    "select index_select gather movedim swapaxes"
)
_NUMPY_METHODS = frozenset(["sum", "mean", "std", "var", "max", "min", "clip", "dot", "prod"])
_RANDOM = _words("randn rand randn_like rand_like normal uniform standard_normal random_normal")
_RANDOM_METHODS = _words("normal_ uniform_")
_MASKS = _words(
    "equal not_equal greater greater_equal less less_equal eq ne gt ge lt le sequence_mask "
    "isfinite isnan logical_and logical_or logical_not"
)
_MASK_METHODS = _words("eq ne gt ge lt le")
_PROB_NAMES = frozenset({"softmax", "sigmoid", "expit"})
_PICKED = Value(picked=True)
_PASS_ATTRS = frozenset({"data", "T", "mT", "real"})
_HALF_NAMES = frozenset({"float16", "half", "bfloat16", "HalfTensor", "BFloat16Tensor"})
_FLOAT_NAMES = frozenset({"float32", "float", "float64", "double", "FloatTensor"})
_GUARDS = frozenset({"where", "nan_to_num", "masked_fill", "divide_no_nan", "nan_to_num_"})
_NO_GRAD = frozenset({"no_grad", "inference_mode", "stop_gradient"})
_FORWARD = ("forward", "call", "__call__")
_INIT = ("__init__", "build", "setup", "reset_parameters")


class SourceFile:
    """A source text with the module-level imports and helpers for locations and text."""

    def __init__(self, path: str, source: str, tree: ast.Module) -> None:
        self.path = path
        self.source = source
        self.lines = _LINE_SPLIT.split(source)
        self.imports: list[tuple[str, str]] = []
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imports.extend(import_bindings(node))
            elif isinstance(node, (ast.If, ast.Try)):  # try: import x except ImportError
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        self.imports.extend(import_bindings(sub))

    def line(self, n: int) -> str:
        return self.lines[n - 1] if 0 < n <= len(self.lines) else ""

    def col(self, line: int, byte_col: int) -> int:
        """0-based character column of an ast byte offset."""
        text = self.line(line)
        if text.isascii():
            return byte_col
        return len(text.encode("utf-8")[:byte_col].decode("utf-8", "replace"))

    def text(self, node: ast.AST) -> str:
        start, end = node.lineno, node.end_lineno or node.lineno
        c0 = self.col(start, node.col_offset)
        c1 = self.col(end, node.end_col_offset or 0)
        if start == end:
            return self.line(start)[c0:c1]
        parts = [self.line(start)[c0:]]
        parts += [self.line(n) for n in range(start + 1, end)]
        parts.append(self.line(end)[:c1])
        return "\n".join(parts)

    def alias(self, qualified: str) -> str | None:
        """The shortest spelling of ``qualified`` reachable from this file's imports."""
        best = None
        for local, qual in self.imports:
            if qualified == qual or qualified.startswith(qual + "."):
                spelled = local + qualified[len(qual) :]
                if best is None or len(spelled) < len(best):
                    best = spelled
        return best


class Scope:
    __slots__ = ("cls", "parent", "returns", "tested", "vars")

    def __init__(self, parent: Scope | None, cls: dict | None = None) -> None:
        self.vars: dict[str, Value] = {}
        self.parent = parent
        self.cls = cls  # the enclosing class's ``self.*`` attribute values, methods
        self.tested: set[str] = set()
        self.returns: list[Value] = []

    def lookup(self, name: str) -> Value | None:
        scope: Scope | None = self
        while scope is not None:
            v = scope.vars.get(name)
            if v is not None:
                return v
            scope = scope.parent
        return None


def walk(
    file: SourceFile,
    tree: ast.Module,
    by_op: dict,
    by_name: dict,
    calls: list | None = None,
    outgoing: bool = False,
) -> Walker:
    """Walk the module; while call sites bring new facts into parameters, walk it again
    with them (a fixed point, at most ``MAX_WALKS`` walks). The last walk's hits count.

    ``calls``: calls of this module's functions from other files of the project
    (``(function, path, line, spreads, values, kwvalues)``), joined with its own.
    ``outgoing``: record this module's calls of imported functions (``walker.outgoing``).
    """
    outside = C.external_sites(tree, calls) if calls else {}
    facts = C.parameter_facts(outside, set()) if outside else None
    walker = Walker(file, by_op, by_name, facts)
    walker.record = outgoing
    walker.module(tree)
    for _ in range(C.MAX_WALKS - 1):
        facts = C.parameter_facts(C.merged(walker.sites, outside), walker.escaped)
        if facts == walker.params or not (
            walker.params or C.worth_another_walk(facts, bool(walker.hits))
        ):
            break
        walker = Walker(file, by_op, by_name, facts)
        walker.record = outgoing
        walker.module(tree)
    return walker


class Walker:
    """Walks one module; collects ``(rule, Hit)`` pairs in ``hits``."""

    def __init__(
        self,
        file: SourceFile,
        by_op: dict[str, list[Rule]],
        by_name: dict,
        params: dict[int, dict[str, Value]] | None = None,
    ) -> None:
        self.file = file
        self.params = params or {}  # id(function) -> parameter -> fact (from call sites)
        self.sites: dict[int, tuple[str, dict[int, C.Site]]] = {}
        self.escaped: set[int] = set()  # functions also used as values: unseen calls
        # calls of functions imported from elsewhere, when ``record``:
        # (qualified name, line, spreads, values, kwvalues), for the project pass
        self.record = False
        self.outgoing: list[tuple[str, int, tuple, list[Value], dict[str, Value]]] = []
        self.by_op = by_op
        self.by_name = by_name
        self.values: dict[int, Value] = {}
        self.hits: list[tuple[Rule, Hit]] = []
        self.errors: list[tuple[str, ast.AST, Exception]] = []
        self.emit = True
        self.no_grad = False
        self.guard_depth = 0
        self.neg_depth = 0  # inside a unary minus: -sum(y * log(p))
        self.mul_depth = 0  # inside an operand of a product: y * log(p)
        self.scope = Scope(None)
        self._summaries: dict[int, Value] = {}
        self._classes: dict[int, dict] = {}
        self._busy: set[int] = set()

    # ---- entry ---------------------------------------------------------------------------
    def module(self, tree: ast.Module) -> None:
        self.block(tree.body, self.scope)

    # ---- statements ----------------------------------------------------------------------
    def block(self, body: list[ast.stmt], scope: Scope) -> None:
        for st in body:
            self.stmt(st, scope)

    def stmt(self, st: ast.stmt, scope: Scope) -> None:
        t = type(st)
        if t is ast.Expr:
            v = self.expr(st.value, scope)
            call = st.value
            if (  # model.half() converts the module in place
                v.half
                and type(call) is ast.Call
                and type(call.func) is ast.Attribute
                and type(call.func.value) is ast.Name
            ):
                old = scope.lookup(call.func.value.id) or UNKNOWN
                scope.vars[call.func.value.id] = replace(old, half=True)
        elif t is ast.Assign:
            v = self.expr(st.value, scope)
            for target in st.targets:
                self.bind(target, v, scope)
        elif t is ast.AnnAssign:
            if st.value is not None:
                self.bind(st.target, self.expr(st.value, scope), scope)
        elif t is ast.AugAssign:
            v = self.binop(st, st.op, st.target, st.value, scope)
            self.bind(st.target, v, scope)
        elif t is ast.Return:
            scope.returns.append(self.expr(st.value, scope) if st.value else UNKNOWN)
        elif t is ast.FunctionDef or t is ast.AsyncFunctionDef:
            for d in st.decorator_list:
                self.expr(d, scope)
            scope.vars[st.name] = Value(func=st, line=st.lineno)
            if self.emit:
                self.function(st, scope, scope.cls)
        elif t is ast.ClassDef:
            for b in st.bases:
                self.expr(b, scope)
            scope.vars[st.name] = Value(func=st, line=st.lineno)
            if self.emit:
                self.klass(st, scope)
        elif t is ast.If or t is ast.While:
            self.test(st.test, scope)
            self.block(st.body, scope)
            self.block(st.orelse, scope)
        elif t is ast.For or t is ast.AsyncFor:
            self.expr(st.iter, scope)
            self.bind(st.target, UNKNOWN, scope)
            self.block(st.body, scope)
            self.block(st.orelse, scope)
        elif t is ast.With or t is ast.AsyncWith:
            no_grad = False
            for item in st.items:
                self.expr(item.context_expr, scope)
                no_grad = no_grad or _is_no_grad(item.context_expr)
                if item.optional_vars is not None:
                    self.bind(item.optional_vars, UNKNOWN, scope)
            saved = self.no_grad
            self.no_grad = saved or no_grad
            self.block(st.body, scope)
            self.no_grad = saved
        elif t is ast.Try or t.__name__ == "TryStar":
            self.block(st.body, scope)
            for h in st.handlers:
                if h.name:
                    scope.vars[h.name] = UNKNOWN
                self.block(h.body, scope)
            self.block(st.orelse, scope)
            self.block(st.finalbody, scope)
        elif t is ast.Import or t is ast.ImportFrom:
            for local, qual in import_bindings(st):
                scope.vars[local] = Value(qual=qual)
            if t is ast.ImportFrom and st.level:  # from .losses import ce: ``.losses.ce``
                head = "." * st.level + (st.module + "." if st.module else "")
                for alias in st.names:
                    if alias.name != "*":
                        scope.vars[alias.asname or alias.name] = Value(qual=head + alias.name)
        elif t is ast.Assert:
            self.test(st.test, scope)
        elif t in (ast.Pass, ast.Break, ast.Continue, ast.Global, ast.Nonlocal, ast.Delete):
            return
        else:  # Raise, Match, TypeAlias, ...: look at every expression and nested block
            for child in ast.iter_child_nodes(st):
                if isinstance(child, ast.expr):
                    self.expr(child, scope)
                elif isinstance(child, ast.stmt):
                    self.stmt(child, scope)
                elif isinstance(child, ast.match_case):
                    if child.guard is not None:
                        self.test(child.guard, scope)
                    self.block(child.body, scope)

    def test(self, node: ast.expr, scope: Scope) -> None:
        """A condition: look at it, and remember the names it checks (they are guarded)."""
        self.expr(node, scope)
        for n in ast.walk(node):
            if type(n) is ast.Name:
                scope.tested.add(n.id)
            elif type(n) is ast.Attribute:
                parts = dotted(n)
                if parts:
                    scope.tested.add(".".join(parts))

    def is_tested(self, node: ast.AST) -> bool:
        names = set()
        for n in ast.walk(node):
            if type(n) is ast.Name:
                names.add(n.id)
            elif type(n) is ast.Attribute:
                parts = dotted(n)
                if parts:
                    names.add(".".join(parts))
        scope: Scope | None = self.scope
        while scope is not None:
            if names & scope.tested:
                return True
            scope = scope.parent
        return False

    def bind(self, target: ast.expr, v: Value, scope: Scope) -> None:
        t = type(target)
        if t is ast.Name:
            scope.vars[target.id] = v.named(target.id) if v.kind else v
        elif t is ast.Attribute:
            parts = dotted(target)
            if parts:
                scope.vars[".".join(parts)] = v.named(parts[-1]) if v.kind else v
            else:
                self.expr(target.value, scope)
        elif t is ast.Tuple or t is ast.List:
            items = v.items if v.items is not None and len(v.items) == len(target.elts) else None
            for i, elt in enumerate(target.elts):
                self.bind(elt, items[i] if items else UNKNOWN, scope)
        elif t is ast.Starred:
            self.bind(target.value, UNKNOWN, scope)
        elif t is ast.Subscript:
            self.expr(target.value, scope)
            self.expr(target.slice, scope)

    # ---- functions and classes ------------------------------------------------------------
    def function(self, fn: ast.AST, outer: Scope, cls: dict | None) -> Scope:
        scope = Scope(outer, cls)
        args = fn.args
        for d in (*args.defaults, *(d for d in args.kw_defaults if d is not None)):
            self.expr(d, outer)
        facts = self.params.get(id(fn), {})
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                scope.vars[a.arg] = facts.get(a.arg, UNKNOWN)
        saved = self.no_grad, self.scope, self.guard_depth
        self.no_grad = self.no_grad or any(_is_no_grad(d) for d in fn.decorator_list)
        self.scope = scope
        self.guard_depth = 0
        try:
            self.block(fn.body, scope)
        finally:
            self.no_grad, self.scope, self.guard_depth = saved
        return scope

    def summary(self, fn: ast.AST, outer: Scope, cls: dict | None) -> Value:
        """What calling a user function returns (a quiet walk of its body, cached)."""
        key = id(fn)
        if key in self._summaries:
            return self._summaries[key]
        if type(fn) is ast.Lambda and key not in self._busy:
            self._busy.add(key)
            saved = self.emit
            self.emit = False
            try:
                result = self.expr(fn.body, self._lambda_scope(fn, outer))
            finally:
                self.emit = saved
                self._busy.discard(key)
            self._summaries[key] = result
            return result
        if key in self._busy or not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return UNKNOWN
        self._busy.add(key)
        saved = self.emit
        self.emit = False
        try:
            scope = self.function(fn, outer, cls)
        finally:
            self.emit = saved
            self._busy.discard(key)
        result = UNKNOWN
        if scope.returns:
            result = scope.returns[0]
            for r in scope.returns[1:]:
                result = V.join(result, r)
        self._summaries[key] = result
        return result

    def class_info(self, cls: ast.ClassDef, outer: Scope) -> dict:
        """``self.*`` values set by the class's ``__init__`` (and its bases'), its methods."""
        key = id(cls)
        info = self._classes.get(key)
        if info is not None:
            return info
        info = {"attrs": {}, "methods": {}, "outer": outer}
        self._classes[key] = info
        for base in cls.bases:
            parts = dotted(base)
            bv = outer.lookup(parts[0]) if parts and len(parts) == 1 else None
            if bv is not None and isinstance(bv.func, ast.ClassDef) and bv.func is not cls:
                parent = self.class_info(bv.func, outer)
                info["attrs"].update(parent["attrs"])
                info["methods"].update(parent["methods"])
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                info["methods"][item.name] = item
        saved = self.emit
        self.emit = False
        try:
            for name in _INIT:
                fn = info["methods"].get(name)
                if fn is not None:
                    scope = self.function(fn, outer, info)
                    for k, v in scope.vars.items():
                        if k.startswith("self."):
                            info["attrs"][k] = v
            # attributes set elsewhere (``fit`` stores ``self.std``): facts all agree on
            later: dict[str, Value] = {}
            for name, fn in info["methods"].items():
                if name in _INIT or name in _FORWARD or _cheap_skip(fn):
                    continue
                scope = self.function(fn, outer, info)
                for k, v in scope.vars.items():
                    if k.startswith("self.") and k not in info["attrs"]:
                        later[k] = V.join(later[k], v) if k in later else v
            info["attrs"].update(later)
        finally:
            self.emit = saved
        return info

    def klass(self, cls: ast.ClassDef, outer: Scope) -> None:
        info = self.class_info(cls, outer)
        body_scope = Scope(outer, info)
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in item.decorator_list:
                    self.expr(d, body_scope)
                self.function(item, outer, info)
            else:
                self.stmt(item, body_scope)

    def lookup(self, name: str, scope: Scope) -> Value | None:
        v = scope.lookup(name)
        if v is None and name.startswith("self."):
            s: Scope | None = scope
            while s is not None and s.cls is None:
                s = s.parent
            if s is not None:
                v = s.cls["attrs"].get(name)
        return v

    def _method_of_self(self, name: str, scope: Scope) -> tuple[ast.AST, dict] | None:
        s: Scope | None = scope
        while s is not None and s.cls is None:
            s = s.parent
        if s is None:
            return None
        fn = s.cls["methods"].get(name)
        return (fn, s.cls) if fn is not None else None

    def call_instance(self, cls: ast.ClassDef) -> Value:
        info = self.class_info(cls, self._module_scope())
        for name in _FORWARD:
            fn = info["methods"].get(name)
            if fn is not None:
                return self.summary(fn, info["outer"], info)
        return UNKNOWN

    def _module_scope(self) -> Scope:
        s = self.scope
        while s.parent is not None:
            s = s.parent
        return s

    # ---- expressions ----------------------------------------------------------------------
    def expr(self, node: ast.expr, scope: Scope) -> Value:
        t = type(node)
        if t is ast.Name:
            v = self.lookup(node.id, scope) or UNKNOWN
            if v.func is not None:  # passed or stored as a value: calls we cannot see
                self.escaped.add(id(v.func))
        elif t is ast.Call:
            v = self.call(node, scope)
        elif t is ast.Attribute:
            v = self.attribute(node, scope)
        elif t is ast.Constant:
            c = node.value
            if type(c) is float or (type(c) is int and -(2**1000) < c < 2**1000):
                v = V.const(float(c), node)
            elif type(c) is str and c in _HALF_NAMES:
                v = Value(qual="dtype.float16")
            else:
                v = UNKNOWN
        elif t is ast.BinOp:
            v = self.binop(node, node.op, node.left, node.right, scope)
        elif t is ast.UnaryOp:
            neg = type(node.op) is ast.USub
            self.neg_depth += neg
            a = self.expr(node.operand, scope)
            self.neg_depth -= neg
            if neg:
                if a.kind == "const":
                    v = V.const(-a.lo, node)
                else:
                    v = Value(
                        kind="neg",
                        base=a.kind,
                        lo=-a.hi,
                        hi=-a.lo,
                        node=node,
                        line=node.lineno,
                        half=a.half,
                        inner=a.node,
                    )
            elif type(node.op) is ast.UAdd:
                v = a
            else:
                v = UNKNOWN
        elif t is ast.Subscript:
            base = self.expr(node.value, scope)
            self.expr(node.slice, scope)
            masked = any(type(n) is ast.Compare for n in ast.walk(node.slice))
            if base.kind or base.layer or base.half:
                v = replace(base, node=node, guarded=base.guarded or masked)
            else:
                v = Value(guarded=True) if masked else _PICKED
        elif t is ast.Compare:
            self.expr(node.left, scope)
            for c in node.comparators:
                self.expr(c, scope)
            v = Value(kind="mask", lo=0.0, hi=1.0, node=node, line=node.lineno)
        elif t is ast.IfExp:
            self.test(node.test, scope)
            self.guard_depth += 1
            a = self.expr(node.body, scope)
            b = self.expr(node.orelse, scope)
            self.guard_depth -= 1
            v = V.join(a, b)
        elif t is ast.Lambda:
            for d in (*node.args.defaults, *(d for d in node.args.kw_defaults if d)):
                self.expr(d, scope)
            self.expr(node.body, self._lambda_scope(node, scope))
            v = Value(func=node, line=node.lineno)
        elif t in (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp):
            inner = Scope(scope, scope.cls)
            for gen in node.generators:
                self.expr(gen.iter, inner)
                self.bind(gen.target, UNKNOWN, inner)
                for cond in gen.ifs:
                    self.test(cond, inner)
            if t is ast.DictComp:
                self.expr(node.key, inner)
                self.expr(node.value, inner)
            else:
                self.expr(node.elt, inner)
            v = UNKNOWN
        elif t is ast.Tuple and type(node.ctx) is ast.Load:
            items = tuple(self.expr(e, scope) for e in node.elts)
            known = any(i.kind or i.layer or i.instance for i in items)
            v = (
                Value(items=items)
                if known and not any(type(e) is ast.Starred for e in node.elts)
                else UNKNOWN
            )
        elif t is ast.NamedExpr:
            v = self.expr(node.value, scope)
            self.bind(node.target, v, scope)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child, scope)
                elif type(child) is ast.keyword:
                    self.expr(child.value, scope)
            v = UNKNOWN
        if self.params and v.via is None and (v.half or v.base) and t in _DERIVED:
            v = self._inherit(node, v)
        self.values[id(node)] = v
        return v

    def _inherit(self, node: ast.expr, v: Value) -> Value:
        """A value computed from a parameter's fact keeps the call site that brought it
        when the fact flows into it (float16 stays float16; ``1 - p`` of a softmax ``p``)."""
        for child in _operands(node):
            c = self.values.get(id(child))
            if (c is not None and c.via is not None and c.kind != "const") and (
                (v.half and c.half) or (v.base and v.base == c.kind)
            ):
                return replace(v, via=c.via)
        return v

    def attribute(self, node: ast.Attribute, scope: Scope) -> Value:
        parts = dotted(node)
        if parts is not None:
            if parts[0] == "self":
                v = self.lookup(".".join(parts[:2]), scope)
                if v is not None:
                    return v if len(parts) == 2 else self._attr_of(v, parts[2:], node)
            head = self.lookup(parts[0], scope)
            if head is not None:
                return self._attr_of(head, parts[1:], node)
            return UNKNOWN
        base = self.expr(node.value, scope)
        return self._attr_of(base, [node.attr], node)

    def _attr_of(self, base: Value, rest: list[str], node: ast.AST) -> Value:
        if base.qual:
            qual = canonical(base.qual + "." + ".".join(rest))
            if rest[-1] in _HALF_NAMES:
                return Value(qual="dtype.float16")
            return Value(qual=qual)
        if all(r in _PASS_ATTRS for r in rest) and base.kind:
            return replace(base, node=node)
        return UNKNOWN

    def binop(self, node, op: ast.operator, left, right, scope: Scope) -> Value:
        t = type(op)
        product = t is ast.Mult
        self.mul_depth += product
        a = self.expr(left, scope)
        b = self.expr(right, scope)
        self.mul_depth -= product
        if t is ast.Div:
            return self.apply("div", "operator./", node, [left, right], [a, b], {}, {}, None)
        if t is ast.Pow:
            return self.apply("pow", "operator.**", node, [left, right], [a, b], {}, {}, None)
        if t is ast.MatMult:  # arrays or tensors, never plain numbers
            fw = a.fw or b.fw or "numpy"
            return self.apply("matmul", "operator.@", node, [left, right], [a, b], {}, {}, fw)
        if t is ast.Add:
            return V.add(a, b, node)
        if t is ast.Sub:
            if not b.kind and "max" in (_name_of(right) or ""):
                b = Value(kind="max", node=right, line=node.lineno)
            return V.sub(a, b, node)
        if t is ast.Mult:
            if a.kind != "const" and ast.dump(left) == ast.dump(right):
                return Value(
                    kind="square",
                    lo=0.0,
                    node=node,
                    line=node.lineno,
                    half=a.half,
                    base=a.kind,
                    fw=a.fw,
                )
            return V.mul(a, b, node)
        return UNKNOWN

    def call(self, node: ast.Call, scope: Scope) -> Value:
        func = node.func
        qual: str | None = None
        fval: Value | None = None
        recv_node: ast.expr | None = None
        recv = UNKNOWN
        user: tuple | None = None
        if type(func) is ast.Attribute:
            parts = dotted(func)
            if parts is not None and parts[0] == "self" and len(parts) == 2:
                fval = self.lookup(".".join(parts), scope)
                if fval is None:
                    user = self._method_of_self(parts[1], scope)
            if fval is None and user is None:
                recv_node = func.value
                recv = self.expr(recv_node, scope)
                if recv.qual:
                    qual = canonical(recv.qual + "." + func.attr)
                else:
                    qual = "Tensor." + func.attr
        elif type(func) is ast.Name:
            fval = self.lookup(func.id, scope)
            if fval is not None and fval.qual:
                qual, fval = fval.qual, None
            elif fval is None and func.id in _PROB_NAMES:
                qual = "local." + func.id  # from utils import softmax
        else:
            fval = self.expr(func, scope)

        last = qual.rsplit(".", 1)[-1] if qual else ""
        guard = last in _GUARDS
        if guard:
            self.guard_depth += 1
        operands = list(node.args)
        values = [self.expr(a, scope) for a in operands]
        keywords: dict[str, ast.expr] = {}
        kwvalues: dict[str, Value] = {}
        for k in node.keywords:
            kv = self.expr(k.value, scope)
            if k.arg:
                keywords[k.arg] = k.value
                kwvalues[k.arg] = kv
        if guard:
            self.guard_depth -= 1

        callee = user[0] if user is not None else fval.func if fval is not None else None
        if callee is not None and type(callee) is not ast.ClassDef:
            skip = 1 if user is not None and not C.is_static(callee) else 0
            self._record(callee, node, values, kwvalues, skip)
        if user is not None:
            return self.summary(user[0], user[1]["outer"], user[1])
        if fval is not None:
            return self.call_value(fval, node, operands, values, keywords, kwvalues)
        if qual is None:
            return UNKNOWN
        if qual.startswith("Tensor."):
            if any(type(a) is ast.Starred for a in operands):
                return UNKNOWN
            return self.method(
                qual, last, node, recv_node, recv, operands, values, keywords, kwvalues
            )
        return self.function_call(qual, last, node, operands, values, keywords, kwvalues)

    def _record(self, fn: ast.AST, node: ast.Call, values, kwvalues, skip: int) -> None:
        """Remember what this call passes to each of ``fn``'s parameters."""
        bound = C.bind_call(fn, C.spreads(node), values, kwvalues, self.values, skip)
        key = id(fn)
        entry = self.sites.get(key)
        if entry is None:
            entry = self.sites[key] = (C.function_name(fn, node), {})
        old = entry[1].get(id(node))
        entry[1][id(node)] = (node.lineno, C.merge_site(old[1] if old else None, bound), None)

    def _outgoing(self, qual: str, node: ast.Call, values, kwvalues) -> None:
        vals = [C.portable(v) for v in values]
        kws = {k: C.portable(v) for k, v in kwvalues.items()}
        self.outgoing.append((qual, node.lineno, C.spreads(node), vals, kws))

    def _lambda_scope(self, fn: ast.Lambda, outer: Scope) -> Scope:
        inner = Scope(outer, outer.cls)
        facts = self.params.get(id(fn), {})
        args = fn.args
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                inner.vars[a.arg] = facts.get(a.arg, UNKNOWN)
        return inner

    def call_value(self, fval, node, operands, values, keywords, kwvalues) -> Value:
        if fval.layer:
            fw = framework_of(fval.qual) if fval.qual else "torch"
            out = self.apply(fval.layer, "layer", node, operands, values, keywords, kwvalues, fw)
            return replace(fval.layer_out, node=node, line=node.lineno) if fval.layer_out else out
        if fval.layer_out is not None:
            return replace(fval.layer_out, node=node, line=node.lineno)
        if fval.instance is not None:
            return self.call_instance(fval.instance)
        if isinstance(fval.func, ast.ClassDef):
            return Value(instance=fval.func, line=node.lineno)
        if fval.func is not None:
            return self.summary(fval.func, self._module_scope(), None)
        return UNKNOWN

    def method(self, qual, name, node, recv_node, recv, operands, values, kw, kwv) -> Value:
        if name in _MASK_METHODS and len(operands) == 1 and not kw:
            return Value(kind="mask", lo=0.0, hi=1.0, node=node, line=node.lineno, fw=recv.fw)
        if name in _RANDOM_METHODS:
            return Value(kind="random", fw="torch", node=node, line=node.lineno)
        if name in ("masked_fill", "masked_fill_"):
            return recv
        if name == "gather":
            return replace(recv, picked=True) if recv.kind else _PICKED
        if name == "gradient" and operands:  # tape.gradient(loss, x): 0 where x has no effect
            return Value(kind="grad", fw="tf", node=node, line=node.lineno)
        if name in ("half", "bfloat16"):
            return replace(recv, half=True, node=node) if recv.kind else Value(half=True)
        if name in _SAME:
            if name in ("float", "double"):
                return replace(recv, half=False) if recv.half else recv
            if name in ("to", "type", "astype"):
                dtypes = [*values, *kwv.values()]
                if any(d.qual == "dtype.float16" for d in dtypes):
                    return replace(recv, half=True) if recv.kind else Value(half=True)
            return recv
        op = lookup(qual)
        if op is None:
            if qual in self.by_name:
                self.apply(
                    None,
                    qual,
                    node,
                    [recv_node, *operands],
                    [recv, *values],
                    kw,
                    kwv,
                    "torch",
                    method=True,
                )
            return UNKNOWN
        n = len(operands)
        if op.name in _UNARY:
            if n or kw:
                return UNKNOWN
        elif op.name in _BINARY:
            if n + len(kw) != 1 and not (op.name == "div" and n == 1):
                return UNKNOWN
        elif op.name in _DIM:
            if not n and "dim" not in kw:
                return UNKNOWN
        elif op.name not in _ANY:
            return UNKNOWN
        fw = recv.fw or (None if name in _NUMPY_METHODS else "torch")
        return self.apply(
            op.name, qual, node, [recv_node, *operands], [recv, *values], kw, kwv, fw, method=True
        )

    def function_call(self, qual, name, node, operands, values, kw, kwv) -> Value:
        fw = framework_of(qual)
        if name in _PROB_NAMES and (fw is None or lookup(qual) is None):
            # scipy.special.expit, from utils import softmax: named for what they return
            kind = "sigmoid" if name in ("sigmoid", "expit") else "softmax"
            return V.prob(kind, node, operands[0] if operands else None, fw, False)
        if fw is None:
            if self.record and self.emit:
                self._outgoing(qual, node, values, kwv)
            return UNKNOWN
        if qual in ("torch.autograd.grad", "jax.grad"):
            return Value(kind="grad", fw=fw, node=node, line=node.lineno)
        if name in ("gather", "take_along_dim", "gather_nd", "take_along_axis"):
            first = values[0] if values else UNKNOWN
            return replace(first, picked=True) if first.kind else _PICKED
        if name in _MASKS:
            return Value(kind="mask", lo=0.0, hi=1.0, node=node, line=node.lineno, fw=fw)
        if name in _SAME or name in ("squeeze", "reshape"):
            first = values[0] if values else UNKNOWN
            if name == "cast" and any(d.qual == "dtype.float16" for d in (*values, *kwv.values())):
                return replace(first, half=True) if first.kind else Value(half=True)
            return first
        if name in _RANDOM:
            return Value(kind="random", fw=fw, node=node, line=node.lineno)
        if name == "where" and len(values) > 2:
            return V.join(values[1], values[2])
        if name == "masked_fill" and values:
            return values[0]
        if name == "epsilon" and qual.startswith("keras."):
            return V.const(1e-7, node)
        if name in ("Sequential",):
            layers = values
            if len(values) == 1 and type(operands[0]) is ast.List:
                layers = [self.values.get(id(e), UNKNOWN) for e in operands[0].elts]
            out = self._layer_output(layers[-1], node) if layers else None
            return Value(layer_out=out, line=node.lineno) if out else UNKNOWN
        op = lookup(qual)
        if op is not None and name[:1].isupper():  # a layer / loss object: nn.Softmax(dim=1)
            out = None
            act = kw.get("activation")
            if act is not None:
                out = self._activation(act, kwv["activation"], node)
            return Value(layer=op.name, qual=None, layer_out=out, line=node.lineno, fw=fw)
        if op is None:
            if qual in self.by_name:
                self.apply(None, qual, node, operands, values, kw, kwv, fw)
            half = any(d.qual == "dtype.float16" for d in kwv.values())
            return Value(half=True, fw=fw) if half else Value(fw=fw)
        return self.apply(op.name, qual, node, operands, values, kw, kwv, fw)

    def _layer_output(self, layer: Value, node) -> Value | None:
        if layer.layer in V.PROB:
            return V.prob(layer.layer, node, None, layer.fw, False)
        if layer.layer_out is not None:
            return layer.layer_out
        if layer.instance is not None:
            out = self.call_instance(layer.instance)
            return out if out.kind else None
        return None

    def _activation(self, node: ast.expr, value: Value, call: ast.AST) -> Value | None:
        name = None
        if type(node) is ast.Constant and isinstance(node.value, str):
            name = node.value
        elif value.qual:
            op = lookup(value.qual)
            name = op.name if op else None
        return V.prob(name, call, None, "keras", False) if name in V.PROB else None

    # ---- op application -------------------------------------------------------------------
    def apply(self, op, qual, node, operands, values, kw, kwv, fw, method=False) -> Value:
        if fw is None:
            fw = next((v.fw for v in values if v.fw), None)
        if self.emit:
            rules = self.by_op.get(op, ()) if op else ()
            named = self.by_name.get(qual, ())
            if rules or named:
                call = OpCall(op, qual, node, operands, values, kw, kwv, fw, method, self)
                for rule in (*rules, *named):
                    call.read = []
                    try:
                        hits = list(rule.check(call))
                        self.hits.extend((rule, self._via(hit, call.read)) for hit in hits)
                    except Exception as exc:  # a rule bug must not stop the file
                        self.errors.append((rule.CODE, node, exc))
        if op is None:
            return Value(fw=fw)
        out = self.transfer(op, qual, node, operands, values, kw, kwv, fw)
        return out if out.fw or not fw else replace(out, fw=fw)

    def _via(self, hit: Hit, read: list[Value]) -> Hit:
        """A finding that rests on a parameter's fact (the rule read a value that came
        from a call site) names the call site; a *maybe* fact makes it a warning."""
        for v in read:
            if v.via is None or v.kind == "const" or not (v.kind or v.half):
                continue
            evidence = {
                **hit.evidence,
                "parameter": v.via.param,
                "call_line": v.via.line,
                "maybe": v.via.maybe,
            }
            severity = Severity.WARNING if v.via.maybe else hit.severity
            return replace(
                hit, message=hit.message + C.describe(v), evidence=evidence, severity=severity
            )
        return hit

    def transfer(self, op, qual, node, operands, values, kw, kwv, fw) -> Value:
        a = values[0] if values else UNKNOWN
        if op == "clip":
            lo_node, lo = _arg(
                operands, values, kw, kwv, 1, ("min", "clip_value_min", "a_min", "x_min", "lo")
            )
            hi_node, hi = _arg(
                operands, values, kw, kwv, 2, ("max", "clip_value_max", "a_max", "x_max", "hi")
            )
            if qual.endswith("clamp_max"):
                lo_node, lo, hi_node, hi = None, UNKNOWN, lo_node, lo
            return V.clip(
                a,
                _bound(lo_node, lo, -math.inf, POSITIVE_UNKNOWN),
                _bound(hi_node, hi, math.inf, math.inf),
                node,
                fw,
                hi_is_max=hi.kind == "max",
            )
        two = len(values) >= 2 and "const" not in (values[0].kind, values[1].kind)
        if op in ("maximum", "minimum") and two:
            kind = "max" if op == "maximum" else "min"
            return Value(kind=kind, node=node, line=node.lineno, fw=fw)
        if op == "maximum" and len(values) >= 2:
            x, c, cn = (values[0], values[1], operands[1])
            if x.kind == "const" and c.kind != "const":
                x, c, cn = c, x, operands[0]
            return V.clip(x, _bound(cn, c, -math.inf, POSITIVE_UNKNOWN), math.inf, node, fw)
        if op == "amin":
            return Value(kind="min", node=node, line=node.lineno, fw=fw)
        if op == "div" and len(values) >= 2:
            num, den = values[0], values[1]
            if num.kind == "exp" and den.kind == "sum_exp":
                return V.prob("softmax", node, num.inner, fw, num.half)
            if num.kind == "const" and num.lo == 1 and den.kind == "one_plus_exp":
                return V.prob("sigmoid", node, None, fw, den.half)
            kind = "ratio" if den.kind in ("norm", "sqsum") or den.kind == "sqrt" else ""
            if num.hi <= 0 and den.lo >= 0 and den.kind != "const":
                return Value(hi=0.0, node=node, line=node.lineno, fw=fw, shifted=True)
            if den.kind == "const" and num.kind and den.lo > 0:
                return replace(
                    num,
                    lo=num.lo / den.lo,
                    hi=num.hi / den.lo,
                    node=node,
                    line=node.lineno,
                    name=None,
                )
            return Value(kind=kind, node=node, line=node.lineno, half=num.half or den.half, fw=fw)
        if op == "pow" and len(values) >= 2:
            p = values[1]
            if a.kind == "const" and a.lo > 1 and p.kind != "const":
                return Value(kind="exp", lo=0.0, node=node, line=node.lineno, base=p.kind)
            return V.power(a, p.lo if p.kind == "const" else None, node)
        if op in ("add", "sub", "mul") and len(values) >= 2:
            fn = {"add": V.add, "sub": V.sub, "mul": V.mul}[op]
            return fn(values[0], values[1], node)
        if op == "square":
            return Value(
                kind="square", lo=0.0, node=node, line=node.lineno, half=a.half, fw=fw, base=a.kind
            )
        if op == "norm" and qual.rsplit(".", 1)[-1] in ("normalize", "l2_normalize"):
            return Value(kind="unit", lo=-1.0, hi=1.0, node=node, line=node.lineno, fw=fw)
        inner = operands[0] if operands else None
        return V.result(op, values, node, fw, inner=inner)


_DERIVED = (ast.Call, ast.BinOp, ast.UnaryOp, ast.Subscript)


def _operands(node: ast.expr) -> list[ast.expr]:
    t = type(node)
    if t is ast.BinOp:
        return [node.left, node.right]
    if t is ast.UnaryOp:
        return [node.operand]
    if t is ast.Subscript:
        return [node.value]
    out = [*node.args, *(k.value for k in node.keywords)]
    if type(node.func) is ast.Attribute:
        out.append(node.func.value)
    return out


def _arg(operands, values, kw, kwv, i, names):
    if i < len(operands):
        return operands[i], values[i]
    for n in names:
        if n in kw:
            return kw[n], kwv[n]
    return None, UNKNOWN


def _bound(node, value: Value, absent: float, unknown: float) -> float:
    if node is None or (type(node) is ast.Constant and node.value is None):
        return absent
    if value.kind == "const":
        return value.lo
    if (
        type(node) is ast.BinOp
        and type(node.op) is ast.Sub
        and type(node.left) is ast.Constant
        and node.left.value == 1
    ):
        return 1.0 - 1e-12  # 1 - eps: below 1, not the literal 1

    return unknown


def _cheap_skip(fn: ast.AST) -> bool:
    """A method that stores no ``self.x = ...`` need not be walked for attributes."""
    for node in ast.walk(fn):
        if type(node) is ast.Attribute and type(node.ctx) is ast.Store:
            return False
    return True


def _name_of(node: ast.expr) -> str | None:
    parts = dotted(node.func if type(node) is ast.Call else node)
    return parts[-1].lower() if parts else None


def _is_no_grad(node: ast.expr) -> bool:
    target = node.func if type(node) is ast.Call else node
    parts = dotted(target)
    return bool(parts) and parts[-1] in _NO_GRAD
