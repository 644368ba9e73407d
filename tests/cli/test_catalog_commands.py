import json

from tests.conftest import run_nantrap


def test_traps_lists_every_code():
    out = run_nantrap("traps")
    assert out.returncode == 0
    assert "NT102  clip-before-log" in out.stdout


def test_traps_json():
    data = json.loads(run_nantrap("traps", "--format", "json").stdout)
    assert {"code": "NT101", "name": "log-of-probability"}.items() <= data[0].items()


def test_explain_prints_mechanism_and_fix():
    out = run_nantrap("explain", "NT102")
    assert out.returncode == 0
    assert out.stdout.startswith("NT102 clip-before-log [clip-trap]")
    assert "18.4" in out.stdout and "Good (PyTorch)" in out.stdout


def test_explain_unknown_code_is_a_usage_error():
    out = run_nantrap("explain", "NT999")
    assert out.returncode == 2 and "no trap 'NT999'" in out.stderr


def test_no_command_prints_help():
    out = run_nantrap()
    assert out.returncode == 2 and "traps" in out.stdout
