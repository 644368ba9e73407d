"""``nantrap analyze`` end to end in a subprocess."""

import json

import pytest

from tests.conftest import ROOT, run_nantrap

pytest.importorskip("torch")


def test_text_table_finding_and_exit_code():
    out = run_nantrap(
        "analyze", "tests.analyze.cli_models:classifier", "--input", "x=-1000:1000", cwd=ROOT
    )
    assert out.returncode == 1, out.stderr
    assert "softmax  [0, 1]" in out.stdout.replace("  softmax", " softmax")
    assert "NT101 [error]" in out.stdout and "torch_models.py:" in out.stdout
    assert "fix: replace log(softmax(x)) by log_softmax(x)" in out.stdout


def test_json_of_fixed_twin_is_clean_and_warns_without_ranges():
    fixed = "tests.analyze.cli_models:fixed_classifier"
    out = run_nantrap("analyze", fixed, "--format", "json", "-i", "*=-1000:1000", cwd=ROOT)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["engine"] == "analyze" and data["findings"] == []
    assert [r["op"] for r in data["meta"]["layers"]][-1] == "log_softmax"
    out = run_nantrap("analyze", fixed, "--table", "none", cwd=ROOT)
    assert "no range given for input(s) x" in out.stderr
    assert "NT116 [error]" in out.stdout  # the whole float32 range overflows the first linear


def test_bad_arguments_are_usage_errors():
    out = run_nantrap("analyze", "tests.analyze.cli_models:classifier", "--input", "x", cwd=ROOT)
    assert out.returncode == 2 and "write NAME=LO:HI" in out.stderr
    out = run_nantrap("analyze", "nope.onnx", cwd=ROOT)
    assert out.returncode == 2 and "no such model file" in out.stderr


def test_weight_bound_option():
    out = run_nantrap(
        "analyze", "tests.analyze.cli_models:fixed_classifier", "-i", "x=0:1",
        "--weights", "±0.5", "--format", "json", "--no-preconditions", cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)["meta"]["layers"][0]
    assert first["op"] == "linear" and abs(first["range"][1] - 4.5) < 1e-3  # 8 * 0.5 + 0.5
    bad = run_nantrap("analyze", "tests.analyze.cli_models:classifier", "--weights", "-1", cwd=ROOT)
    assert bad.returncode == 2 and "must be > 0" in bad.stderr
