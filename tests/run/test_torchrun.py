"""``torchrun -m nantrap run script.py``: an unchanged DDP script, every rank guarded (the DDP
model found, guard_ddp used), the same skip everywhere, the bad rank named in the report."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from nantrap.report.run_log import load_run
from tests.conftest import SRC

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def test_torchrun_two_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(port),
            "-m",
            "nantrap",
            "run",
            "--policy",
            "skip",
            "--log-dir",
            str(run_dir),
            str(SCRIPT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # one file per rank: the ranks' prints share one pipe and can interleave
    weights = [(tmp_path / f"weights.rank{r}.txt").read_text() for r in (0, 1)]
    weights = [re.fullmatch(r"rank \d weights (-?\d+\.\d{6})\n", w).group(1) for w in weights]
    assert weights[0] == weights[1]  # same update on both ranks
    assert (run_dir / "run.json").is_file() and (run_dir / "run.rank1.json").is_file()
    log = load_run(run_dir)
    assert log.ranks == [0, 1]
    assert {(a["rank"], a["step"], a["action"]) for a in log.actions} == {
        (0, 3, "skip"),
        (1, 3, "skip"),
    }
    first = log.incidents()[0]
    assert first.rank == 1 and first.diagnosis.code == "NT401"
    assert first.context["bad_ranks"] == [1]
    assert "<b>Rank(s) that went bad:</b> 1<" in (run_dir / "report.html").read_text()
