"""Run a Python script (or ``-m module``) exactly as ``python`` would, inside this process."""

from __future__ import annotations

import runpy
import sys
import traceback
from pathlib import Path

from nantrap.errors import ConfigError

__all__ = ["check_target", "print_script_traceback", "run_script"]


def run_script(target: str, args: list[str], *, module: bool = False) -> None:
    """``python target args`` / ``python -m target args``: ``__main__``, ``sys.argv``,
    ``sys.path[0]`` as Python sets them; restored afterwards. Exceptions propagate."""
    check_target(target, module=module)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    try:
        if module:
            sys.argv = [target, *args]
            sys.path.insert(0, str(Path.cwd()))
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [target, *args]
            sys.path.insert(0, str(Path(target).resolve().parent))
            runpy.run_path(target, run_name="__main__")
    finally:
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path


def check_target(target: str, *, module: bool = False) -> None:
    """Raise ConfigError if the script (or module) to run does not exist."""
    if module:
        import importlib.util

        try:
            found = importlib.util.find_spec(target) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"{target}: no such module")
    elif not Path(target).is_file():
        raise ConfigError(f"{target}: no such script")


def print_script_traceback(exc: BaseException) -> None:
    """The traceback Python would print, without nantrap's and runpy's own frames."""
    tb = exc.__traceback__
    skip = (str(Path(__file__).parent), str(runpy.__file__), "<frozen runpy>")
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(skip):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
