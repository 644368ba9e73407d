"""Guard every ``tf.compat.v1.Session`` training run of an unchanged script (``nantrap run``).

While installed, ``Session.run`` is wrapped. The first run whose fetches hold a training op
(one with optimizer ``Apply*`` updates under it) wraps that session in a
:class:`~nantrap.tf.compat_v1.SessionGuard`; the loss is found in the graph as the scalar the
gradients were taken of (the topmost scalar with a ``gradients/<op>_grad`` scope). Later runs
of that session go through the guard; the guard's own runs reach the real ``Session.run``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import tensorflow as tf

from nantrap.tf.compat_v1 import _ancestors, _grad_input, _update_ops, guard_session

__all__ = ["SessionAutoGuard", "attach", "find_loss", "find_train_op"]

tf1 = tf.compat.v1


def find_train_op(graph: Any, fetches: Any) -> Any | None:
    """The first fetched op that applies optimizer updates, or None."""
    for fetch in tf.nest.flatten(fetches):
        try:
            element = graph.as_graph_element(fetch)
        except (TypeError, ValueError, KeyError):
            continue
        op = element if isinstance(element, tf.Operation) else getattr(element, "op", None)
        if op is not None and _update_ops(op):
            return op
    return None


def find_loss(graph: Any, train_op: Any) -> Any | None:
    """The scalar the optimizer's gradients were taken of: the graph's floating scalars with
    a ``<gradients scope>/<op>_grad`` scope of this optimizer's gradients, the topmost one."""
    grads = [g for op in _update_ops(train_op) if (g := _grad_input(op)) is not None]
    prefixes = {g.name.split("/")[0] for g in grads if "/" in g.name}
    if len(prefixes) != 1:
        return None
    scope = prefixes.pop()
    names = {op.name for op in graph.get_operations()}
    candidates = [
        op
        for op in graph.get_operations()
        if not op.name.startswith(scope)
        and op.outputs
        and op.outputs[0].shape.rank == 0
        and op.outputs[0].dtype.is_floating
        and any(n.startswith(f"{scope}/{op.name}_grad/") for n in names)
    ]
    tops = [c for c in candidates if not any(c in _ancestors(o) - {o} for o in candidates)]
    return tops[0].outputs[0] if len(tops) == 1 else None


class SessionAutoGuard:
    """Wraps ``tf.compat.v1.Session.run`` while installed; one guard per training session."""

    def __init__(
        self,
        *,
        policy: str = "warn",
        log_dir: str | Path = "nantrap-run",
        options: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.log_dir = Path(log_dir)
        self.options = dict(options or {})
        self.guards: dict[int, Any] = {}  # id(session) -> SessionGuard (None: cannot guard)
        self.notes: list[str] = []
        self._inside: set[int] = set()
        self._original = None

    def install(self) -> SessionAutoGuard:
        original = tf1.Session.run
        auto = self

        @functools.wraps(original)
        def run(sess, fetches, *args, **kwargs):
            key = id(sess)
            guard = None if key in auto._inside else auto._guard_for(sess, fetches)
            if guard is None:
                return original(sess, fetches, *args, **kwargs)
            auto._inside.add(key)
            try:
                return guard.run(fetches, *args, **kwargs)
            finally:
                auto._inside.discard(key)

        self._original = original
        tf1.Session.run = run
        return self

    def remove(self) -> None:
        if self._original is not None:
            tf1.Session.run = self._original
            self._original = None

    def _guard_for(self, sess, fetches):
        key = id(sess)
        if key in self.guards:
            return self.guards[key]
        train_op = find_train_op(sess.graph, fetches)
        if train_op is None:
            return None  # not a training run (init, eval): ask again next time
        loss = find_loss(sess.graph, train_op)
        guard = None
        if loss is None:
            self.notes.append(
                f"tf.compat.v1: no single loss found for {train_op.name}; "
                "that session is not guarded"
            )
        else:
            n = sum(1 for g in self.guards.values() if g is not None)
            folder = self.log_dir if n == 0 else self.log_dir / f"session-{n + 1}"
            self._inside.add(key)  # guard_session runs the session while it sets up
            try:
                guard = guard_session(
                    sess,
                    loss=loss,
                    train_op=train_op,
                    policy=self.policy,
                    log_dir=folder,
                    **self.options,
                )
            except Exception as exc:  # never break the user's run
                self.notes.append(f"tf.compat.v1: not guarded ({type(exc).__name__}: {exc})")
            finally:
                self._inside.discard(key)
            if guard is not None:
                guard.folder = folder
        self.guards[key] = guard
        return guard

    # -- the attachment protocol of nantrap.run --------------------------------------
    def describe(self) -> list[str]:
        return [
            f"tf.compat.v1 session training {g.train_op.name} -> {g.folder}"
            for g in self.guards.values()
            if g is not None
        ]

    def close(self, status: str) -> list[str]:
        self.remove()
        for guard in self.guards.values():
            if guard is not None:
                guard.close_guard({"ok": None, "exit": None}.get(status, "error"))
        return self.notes


def attach(config) -> SessionAutoGuard:
    """``nantrap run``'s entry point: install for the run described by ``config``."""
    return SessionAutoGuard(
        policy=config.policy, log_dir=config.log_dir, options=config.guard_options
    ).install()
