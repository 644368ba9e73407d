"""What both Keras backends' instruments patch on a model for one ``fit``, once.

The model's instance gets its own ``train_step`` and ``compute_loss`` (the class stays the
user's), the optimizer its own ``apply`` (through the backend's probe), and Keras' train
function is rebuilt over them; ``uninstall`` removes all of it, also when a step raised
(``fit`` then ends without ``on_train_end``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ModelPatches"]

PATCHED = ("train_step", "compute_loss")


class ModelPatches(abc.ABC):
    """The install/uninstall/pause protocol; a backend's instrument provides the pieces:
    ``optimizer_patch`` (``install``/``uninstall``/``paused``), ``_train_step``,
    ``_train_function`` and ``_remember_loss``."""

    optimizer_patch: Any

    def __init__(self, model: Any, *, on_error: Callable[[], None] | None = None):
        self.model = model
        self.optimizer = model.optimizer
        self.on_error = on_error  # called when a step raises (fit then ends without us)
        self.has_loss = False
        self._installed = False
        self._orig_function: Any = None

    def install(self) -> Any:
        model = self.model
        self._install_optimizer()
        object.__setattr__(model, "train_step", self._train_step)
        object.__setattr__(model, "compute_loss", self._compute_loss(model.compute_loss))
        self._installed = True
        self.rebuild()
        return self

    def rebuild(self) -> None:
        """Rebuild Keras' train function over the patched step (after an LR schedule
        change, for instance)."""
        self.model.make_train_function(force=True)
        self._orig_function = self.model.train_function
        self.model.train_function = self._guarded_function

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        for name in PATCHED:
            vars(self.model).pop(name, None)
        self.optimizer_patch.uninstall()
        self.model.train_function = None  # the next fit builds an unpatched step

    @contextlib.contextmanager
    def paused(self, names: tuple[str, ...] = PATCHED) -> Iterator[None]:
        """The model's ``names`` and the optimizer as the user made them (an eager replay)."""
        saved = {n: vars(self.model).pop(n) for n in names if n in vars(self.model)}
        try:
            with self.optimizer_patch.paused():
                yield
        finally:
            for name, fn in saved.items():
                object.__setattr__(self.model, name, fn)

    # the pieces ---------------------------------------------------------------------------
    def _install_optimizer(self) -> None:
        self.optimizer_patch.install()

    def _guarded_function(self, data: Any) -> Any:
        try:
            return self._train_function(data)
        except StopIteration:
            raise  # Keras' end of the data, not an error
        except BaseException:
            if self.on_error is not None:
                self.on_error()
            raise

    @abc.abstractmethod
    def _train_function(self, data: Any) -> Any:
        """Keras' train function over the patched step (with the batch kept for replay)."""

    @abc.abstractmethod
    def _train_step(self, data: Any) -> Any:
        """The model's train step with the probe's bookkeeping around it."""

    @abc.abstractmethod
    def _remember_loss(self, loss: Any) -> None:
        """Keep the batch loss ``compute_loss`` just returned for the gate."""

    def _compute_loss(self, compute_loss: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            loss = compute_loss(*args, **kwargs)
            self._remember_loss(loss)
            self.has_loss = True
            return loss

        return wrapped
