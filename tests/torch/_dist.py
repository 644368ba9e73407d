"""Helpers for tests that spawn torch.distributed ranks."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sys
from pathlib import Path


def exit_rank(code: int = 0) -> None:
    """End a spawned rank now, with ``code``.

    NB: after a gloo process group is destroyed, the interpreter's teardown sometimes aborts
    in gloo's threads ("terminate called without an active exception", SIGABRT) although
    all the work is done; the tests judge the work, not that teardown, so it is skipped.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_ranks(target, world: int, out: Path, *extra) -> list[dict]:
    """Spawn ``target(rank, world, port, str(out), *extra)`` on ``world`` ranks; assert none
    hung or failed; return each rank's ``out/result-<rank>.json``."""
    ctx = mp.get_context("spawn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        ctx.Process(target=target, args=(r, world, port, str(out), *extra)) for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} hung"
    assert [p.exitcode for p in procs] == [0] * world
    return [json.loads((out / f"result-{r}.json").read_text()) for r in range(world)]
