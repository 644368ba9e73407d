"""Text, JSON and SARIF renderers for lint Reports."""

from __future__ import annotations

import json

from nantrap.findings import Report
from nantrap.lint import lint_source
from nantrap.report import json as json_report
from nantrap.report import sarif, text

SRC = "import torch\ny = torch.log(torch.softmax(z, dim=1))\nq = 1 / x.norm()\n"


def _report() -> Report:
    return Report(engine="lint", findings=lint_source(SRC, "pkg/train.py"))


def test_text():
    out = text.render(_report())
    assert out.splitlines()[0].startswith("pkg/train.py:2:5: NT101 [*] log of")
    assert out.endswith("Found 2 findings.\n[*] 1 fixable with the `--fix` option.\n")
    assert text.render(Report(engine="lint")) == "All checks passed!\n"


def test_json_round_trips():
    report = _report()
    data = json.loads(json_report.render(report))
    assert Report.from_dict(data).findings == report.findings


def test_sarif_has_the_2_1_0_structure():
    doc = json.loads(sarif.render(_report()))
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    (run,) = doc["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "nantrap" and isinstance(driver["version"], str)
    ids = [r["id"] for r in driver["rules"]]
    assert ids == ["NT101", "NT110"]
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["defaultConfiguration"]["level"] in (
            "error",
            "warning",
            "note",
        )
    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note", "none")
        assert result["message"]["text"]
        loc = result["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == "pkg/train.py"
        assert loc["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        region = loc["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
        assert (region["endLine"], region["endColumn"]) >= (region["startLine"], 1)
    fix = run["results"][0]["fixes"][0]["artifactChanges"][0]["replacements"][0]
    assert fix["insertedContent"]["text"] == "torch.log_softmax(z, dim=1)"
    assert fix["deletedRegion"] == {"startLine": 2, "startColumn": 5, "endLine": 2, "endColumn": 39}
