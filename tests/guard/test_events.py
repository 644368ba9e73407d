import json
import logging
import math

from nantrap.findings import Diagnosis, Location, Phase
from nantrap.guard import EventLog, read_events


def test_events_follow_the_schema(tmp_path):
    log = EventLog(tmp_path / "run")
    log.run(
        framework="torch", policy="skip", model="Net", optimizer="SGD", lr=[0.1], argv=["train.py"]
    )
    log.step(
        3,
        loss=math.inf,
        grad_norm=math.nan,
        update_ratio=None,
        lr=0.1,
        ranges={"fc": {"min": -1.0, "max": -math.inf, "saturated": 0.0}},
    )
    d = Diagnosis(
        code="NT103",
        message="log of 0",
        action="skipped",
        location=Location(phase=Phase.FORWARD, step=3, module="head", op="aten.log"),
    )
    log.diagnosis(d)
    log.action(3, "skip", lr_before=0.1, lr_after=0.1)
    log.end(4, "ok")
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # strict JSON: no NaN literals
    assert [r["type"] for r in records] == ["run", "step", "diagnosis", "action", "end"]
    assert all(r["schema_version"] == 1 for r in records)
    run, step, diag, action, end = records
    assert run["framework"] == "torch" and run["rank"] == 0 and run["world_size"] == 1
    assert run["lr"] == [0.1] and run["argv"] == ["train.py"] and "T" in run["time"]
    assert step["loss"] == "inf" and step["grad_norm"] == "nan" and step["update_ratio"] is None
    assert step["ranges"]["fc"]["max"] == "-inf"
    assert diag["code"] == "NT103" and diag["phase"] == "forward" and diag["step"] == 3
    assert diag["module"] == "head" and diag["action"] == "skipped"
    assert Diagnosis.from_dict(diag) == d
    assert action == {
        "schema_version": 1,
        "type": "action",
        "step": 3,
        "action": "skip",
        "to_step": None,
        "lr_before": 0.1,
        "lr_after": 0.1,
        "retries": 0,
        "detail": "",
    }
    assert end["status"] == "ok" and end["step"] == 4
    assert read_events(tmp_path / "run" / "events.jsonl") == records


def test_human_summary_goes_to_the_nantrap_logger(caplog):
    log = EventLog(None)
    with caplog.at_level(logging.WARNING, logger="nantrap"):
        log.diagnosis(
            Diagnosis(
                code="NT401",
                message="input has 3 NaN",
                fix="clean the data",
                location=Location(step=7),
            )
        )
        log.action(7, "rollback", to_step=5, lr_before=0.1, lr_after=0.05, retries=1)
    text = caplog.text
    assert "step 7" in text and "input has 3 NaN" in text and "clean the data" in text
    assert "rollback at step 7 -> back to step 5, lr 0.1 -> 0.05 (retry 1)" in text
    assert len(log.records) == 2 and log.path is None


def test_other_ranks_write_their_own_file(tmp_path):
    log = EventLog(tmp_path, rank=2)
    log.end(0, "ok")
    assert (tmp_path / "events.rank2.jsonl").exists()
    assert not (tmp_path / "events.jsonl").exists()


def test_state_dict_round_trip_appends(tmp_path):
    log = EventLog(tmp_path)
    log.step(0, loss=1.0, grad_norm=1.0, update_ratio=None, lr=0.1)
    state = log.state_dict()
    log.close()
    copy = EventLog(None)
    copy.load_state_dict(state)
    assert copy.state_dict() == state
    copy.step(1, loss=0.5, grad_norm=1.0, update_ratio=None, lr=0.1)
    copy.close()
    assert [r["step"] for r in read_events(tmp_path / "events.jsonl")] == [0, 1]
