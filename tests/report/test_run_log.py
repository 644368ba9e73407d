"""Reading run folders: every record type, per-rank files, and bad input that never raises."""

from __future__ import annotations

import math

from nantrap.findings import Category
from nantrap.report.run_log import load_run, number
from tests.report.runs import diverging_run, header, write_events


def test_reads_a_diverging_run(tmp_path):
    diverging_run(tmp_path)
    log = load_run(tmp_path)
    assert log.problems == []
    assert log.header["model"] == "MLP"
    assert log.status == "ok"
    assert log.last_step == 79
    [incident] = log.incidents()
    assert incident.diagnosis.category is Category.DIVERGENCE
    assert incident.step == 37
    assert [a["action"] for a in incident.actions] == ["rollback"]
    assert len(log.warnings) == 4


def test_series_split_where_a_rollback_replays_steps(tmp_path):
    diverging_run(tmp_path)
    undone, kept = load_run(tmp_path).series("loss")
    assert undone[0][0] == 1 and undone[0][-1] == 37
    assert math.isnan(undone[1][-1])  # the NaN loss at step 37, kept as a value
    assert kept[0][0] == 31 and kept[0][-1] == 79
    assert kept[1][-1] < kept[1][0]  # converged after the rollback


def test_nonfinite_strings_become_floats():
    assert math.isnan(number("nan"))
    assert number("-inf") == -math.inf
    assert number(3) == 3.0
    assert number("3") is None and number(True) is None


def test_corrupt_lines_are_reported_and_the_rest_is_read(tmp_path):
    path = diverging_run(tmp_path)
    lines = path.read_text().splitlines()
    lines.insert(5, '{"type": "step", "step": 4, "loss": ')  # a line cut by a crash
    lines.insert(9, "[1, 2]")
    lines.insert(12, '{"type": "mystery"}')
    lines.insert(14, '{"type": "step", "schema_version": 9, "step": 1}')
    path.write_text("\n".join(lines) + "\n")
    log = load_run(tmp_path)
    assert len(log.problems) == 4
    assert log.problems[0].startswith("events.jsonl:6: not a JSON object")
    assert "unknown record type 'mystery'" in log.problems[2]
    assert "schema_version 9" in log.problems[3]
    assert len(log.incidents()) == 1 and log.last_step == 79


def test_missing_and_empty_folders(tmp_path):
    assert load_run(tmp_path / "nope").problems == [f"{tmp_path / 'nope'}: no such run folder"]
    empty = load_run(tmp_path)
    assert "no events.jsonl in this folder" in empty.problems[0]
    assert empty.status == "unfinished" and empty.last_step is None


def test_per_rank_files_carry_their_rank(tmp_path):
    write_events(tmp_path, [header(rank=0, world_size=2)], "events.rank0.jsonl")
    write_events(
        tmp_path / "rank1", [header(world_size=2), {"type": "step", "step": 1, "loss": 1.0}]
    )
    log = load_run(tmp_path)
    assert log.ranks == [0, 1]
    assert log.distributed
    assert log.steps[0]["rank"] == 1


def test_an_unlocalized_incident_is_folded_into_the_one_that_supersedes_it(tmp_path):
    """Loop form B: NT903 at step 5 (rolled back to 0), NT903 at step 5 again (replayed),
    then the armed trace localizes step 6 and names the second one; the first stays."""

    def diag(code, step, note="", **evidence):
        return {
            "type": "diagnosis",
            "code": code,
            "message": f"{code} at {step}{note}",
            "severity": "error",
            "location": {"step": step},
            "evidence": evidence,
            "engine": "guard",
            "incident": True,
        }

    write_events(
        tmp_path,
        [
            header(),
            diag("NT903", 5, pending_trace=3),
            {"type": "action", "step": 5, "action": "rollback", "to_step": 0},
            diag("NT903", 5, " again", pending_trace=3),
            {"type": "action", "step": 5, "action": "rollback", "to_step": 0},
            diag("NT103", 6, supersedes=[{"code": "NT903", "step": 5}, {"code": "NT903"}]),
        ],
    )
    first, cause = load_run(tmp_path).incidents()
    assert (first.diagnosis.code, first.step, first.earlier) == ("NT903", 5, [])
    assert (cause.diagnosis.code, cause.step, cause.first_step) == ("NT103", 6, 5)
    assert first.diagnosis.message == "NT903 at 5"
    assert [e.diagnosis.message for e in cause.earlier] == ["NT903 at 5 again"]
