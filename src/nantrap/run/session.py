"""One guarded run: attach guards as the script imports frameworks, run it, write the folder.

The run folder holds the guard's ``events.jsonl``, ``run.json`` (command, exit code, status,
what was guarded) and ``report.html``; it is written at the end, on Ctrl-C and on an
exception alike.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nantrap.findings import SCHEMA_VERSION
from nantrap.report.run_log import RUN_JSON
from nantrap.run.attach import all_attachers
from nantrap.run.imports import ImportWatch
from nantrap.run.script import check_target, print_script_traceback, run_script

__all__ = ["GUARD_DEFAULTS", "RunConfig", "RunResult", "default_log_dir", "run_guarded"]


log = logging.getLogger("nantrap")
# what `nantrap run` asks of the guard unless told otherwise: denser step records and range
# samples than a long-running guard's defaults, for a report with curves and a heatmap
GUARD_DEFAULTS = {"log_every": 5, "early_warnings": 10}


def default_log_dir(now: datetime | None = None) -> Path:
    """``nantrap-runs/20261126-081500`` under the current directory."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("nantrap-runs") / stamp


@dataclass
class RunConfig:
    target: str  # script path, or module name with module=True
    args: list[str] = field(default_factory=list)
    module: bool = False
    policy: str = "warn"
    log_dir: Path = field(default_factory=default_log_dir)
    guard_options: dict[str, Any] = field(default_factory=lambda: dict(GUARD_DEFAULTS))
    report: bool = True


@dataclass
class RunResult:
    exit_code: int
    status: str  # ok | error | interrupted | exit
    log_dir: Path
    report: Path | None
    notes: list[str]


def run_guarded(config: RunConfig) -> RunResult:
    """Run the script with guards attached; never raises for what the script does."""
    check_target(config.target, module=config.module)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    attachments: list[Any] = []
    notes: list[str] = []
    watches = [_watch(a, config, attachments, notes) for a in all_attachers()]
    for watch in watches:
        watch.start()
    started = time.time()
    exit_code, status, error = 0, "ok", None
    try:
        run_script(config.target, config.args, module=config.module)
    except SystemExit as exc:
        exit_code, status = _exit_code(exc.code), "exit"
        if exit_code == 0:
            status = "ok"
        elif not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        exit_code, status, error = 130, "interrupted", "KeyboardInterrupt"
        print("\nnantrap run: interrupted (Ctrl-C); writing the run folder", file=sys.stderr)
    except Exception as exc:
        print_script_traceback(exc)
        exit_code, status, error = 1, "error", f"{type(exc).__name__}: {exc}"
    finally:
        for watch in watches:
            watch.stop()
        for attachment in attachments:
            notes += attachment.close(status)
    rank = _launcher_rank()  # under torchrun every rank runs this; rank 0 writes the report
    _write_run_json(config, exit_code, status, error, started, attachments, notes, rank)
    report = _render(config.log_dir) if config.report and rank == 0 else None
    return RunResult(exit_code, status, config.log_dir, report, notes)


def _watch(attacher, config: RunConfig, attachments: list, notes: list[str]) -> ImportWatch:
    def attach(_module) -> None:
        if not attacher.available():
            notes.append(
                f"{attacher.framework}: the script imports {attacher.trigger}, but this "
                f"nantrap has no {attacher.module}; not guarded"
            )
            return
        try:
            attachments.append(importlib.import_module(attacher.module).attach(config))
        except Exception as exc:  # attaching must never break the user's run
            log.warning("nantrap: could not attach to %s: %s", attacher.framework, exc)
            notes.append(f"{attacher.framework}: not guarded ({type(exc).__name__}: {exc})")

    return ImportWatch(attacher.trigger, attach)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


def _launcher_rank() -> int:
    """This process's rank when started by torchrun / a launcher (``RANK``), else 0."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _write_run_json(config, exit_code, status, error, started, attachments, notes, rank) -> None:
    data = {
        "schema_version": SCHEMA_VERSION,
        "type": "nantrap-run",
        "command": [config.target, *config.args],
        "module": config.module,
        "policy": config.policy,
        "exit_code": exit_code,
        "status": status,
        "error": error,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "seconds": round(time.time() - started, 3),
        "guarded": [d for a in attachments for d in a.describe()],
        "notes": notes,
    }
    name = RUN_JSON if rank == 0 else f"run.rank{rank}.json"
    (config.log_dir / name).write_text(json.dumps(data, indent=2) + "\n")


def _render(log_dir: Path) -> Path | None:
    from nantrap.report.html import render_html
    from nantrap.report.run_log import load_run

    try:
        path = log_dir / "report.html"
        path.write_text(render_html(load_run(log_dir)), encoding="utf-8")
        return path
    except Exception as exc:  # the run's own outcome matters more than its report
        log.warning("nantrap: could not render the report of %s: %s", log_dir, exc)
        return None
