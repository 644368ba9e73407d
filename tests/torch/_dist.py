"""Helpers for tests that spawn torch.distributed ranks."""

from __future__ import annotations

import os
import sys


def exit_rank(code: int = 0) -> None:
    """End a spawned rank now, with ``code``.

    NB: after a gloo process group is destroyed, the interpreter's teardown sometimes aborts
    in gloo's threads ("terminate called without an active exception", SIGABRT) although
    all the work is done; the tests judge the work, not that teardown, so it is skipped.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
