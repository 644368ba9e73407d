import json

import pytest

from nantrap.findings import (
    SCHEMA_VERSION,
    Category,
    Diagnosis,
    Edit,
    Finding,
    Location,
    Phase,
    Report,
    Severity,
)


def _diagnosis() -> Diagnosis:
    return Diagnosis(
        code="NT101",
        message="input of log is the output of softmax in model.head, 0.0 in 37 of 640",
        location=Location(
            path="train.py",
            line=41,
            phase=Phase.FORWARD,
            step=12,
            op="aten.log.default",
            neutral_op="log",
            module="model.head",
        ),
        severity=Severity.ERROR,
        evidence={"zeros": 37, "numel": 640, "min": float("-inf"), "nan": 0},
        fix="use cross_entropy on logits",
        action="rolled-back",
    )


def test_category_defaults_to_the_traps():
    assert Finding(code="NT102", message="m").category is Category.CLIP_TRAP
    assert Finding(code="NT999", message="m").category is None


def test_diagnosis_round_trips_through_json():
    d = _diagnosis()
    data = json.loads(json.dumps(d.to_dict()))
    assert data["schema_version"] == SCHEMA_VERSION
    assert (data["phase"], data["op"], data["module"], data["source"], data["step"]) == (
        "forward",
        "aten.log.default",
        "model.head",
        "train.py:41",
        12,
    )
    back = Finding.from_dict(data)
    assert isinstance(back, Diagnosis)
    assert back.evidence["min"] == "-inf"  # non-finite numbers are strings in JSON
    assert back.location == d.location and back.action == "rolled-back"
    assert back.phase is Phase.FORWARD and back.category is Category.DOMAIN


def test_finding_with_edits_round_trips():
    f = Finding(
        code="NT104",
        message="m",
        location=Location(path="a.py", line=1, col=5),
        edits=(Edit(1, 5, 1, 20, "F.logsigmoid(z)"),),
        fix_safe=True,
    )
    assert Finding.from_dict(json.loads(json.dumps(f.to_dict()))) == f


def test_newer_schema_is_refused_with_advice():
    data = _diagnosis().to_dict() | {"schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(ValueError, match="upgrade nantrap"):
        Finding.from_dict(data)


def test_headline_names_step_code_op_module_and_source():
    assert (
        _diagnosis()
        .headline()
        .startswith("step 12 · NT101 domain · log in model.head (train.py:41): input of log")
    )


def test_report_round_trip():
    r = Report(engine="guard", findings=[_diagnosis()], meta={"steps": 3})
    again = Report.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.engine == "guard" and again.meta == {"steps": 3}
    assert again.findings[0].code == "NT101"
