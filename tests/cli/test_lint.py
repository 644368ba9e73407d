"""``nantrap lint`` end to end: output formats, exit codes, config, suppression, fixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_nantrap

BAD = "import torch\n\ny = torch.log(torch.softmax(z, dim=1))\nn = (x - x.mean()) / x.std()\n"
CLEAN = "import torch\n\ny = torch.log_softmax(z, dim=1)\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "bad.py").write_text(BAD)
    (tmp_path / "clean.py").write_text(CLEAN)
    return tmp_path


def test_text_output_and_exit_codes(project: Path):
    out = run_nantrap("lint", "bad.py", cwd=project)
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("bad.py:3:5: NT101 [*] log of `torch.softmax(z, dim=1)`")
    assert lines[1].startswith("  fix: use log_softmax")
    assert lines[2].startswith("bad.py:4:5: NT110 division by `x.std()`")
    assert "Found 2 findings." in out.stdout and "[*] 1 fixable" in out.stdout
    clean = run_nantrap("lint", "clean.py", cwd=project)
    assert (clean.returncode, clean.stdout) == (0, "All checks passed!\n")
    assert run_nantrap("lint", "bad.py", "--exit-zero", cwd=project).returncode == 0


def test_usage_errors_exit_2(project: Path):
    missing = run_nantrap("lint", "nope.py", cwd=project)
    assert missing.returncode == 2 and "no such file or folder: nope.py" in missing.stderr
    bad_code = run_nantrap("lint", "bad.py", "--select", "E501", cwd=project)
    assert bad_code.returncode == 2 and "'E501' is not a code prefix" in bad_code.stderr
    bad_format = run_nantrap("lint", "bad.py", "--format", "xml", cwd=project)
    assert bad_format.returncode == 2


def test_json_output(project: Path):
    out = run_nantrap("lint", ".", "--format", "json", cwd=project)
    data = json.loads(out.stdout)
    assert data["engine"] == "lint" and data["schema_version"] == 1
    assert [(f["code"], f["location"]["line"]) for f in data["findings"]] == [
        ("NT101", 3),
        ("NT110", 4),
    ]
    assert data["findings"][0]["edits"][0]["replacement"] == "torch.log_softmax(z, dim=1)"
    assert data["meta"]["files"] == 2


def test_sarif_output(project: Path):
    out = run_nantrap("lint", "bad.py", "--format", "sarif", cwd=project)
    sarif = json.loads(out.stdout)
    assert sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["NT101", "NT110"]
    region = run["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] == 3 and region["startColumn"] == 5


def test_select_ignore_and_suppression(project: Path):
    out = run_nantrap("lint", "bad.py", "--select", "NT11", cwd=project)
    assert "NT110" in out.stdout and "NT101" not in out.stdout
    out = run_nantrap("lint", "bad.py", "--ignore", "NT101,NT110", cwd=project)
    assert out.returncode == 0
    (project / "sup.py").write_text(BAD.replace("dim=1))", "dim=1))  # nantrap: ignore[NT101]"))
    out = run_nantrap("lint", "sup.py", cwd=project)
    assert "NT101" not in out.stdout and "NT110" in out.stdout


def test_pyproject_configuration(project: Path):
    (project / "pyproject.toml").write_text(
        '[tool.nantrap]\nignore = ["NT110"]\nexclude = ["skip_me"]\n'
    )
    (project / "skip_me").mkdir()
    (project / "skip_me" / "x.py").write_text(BAD)
    out = run_nantrap("lint", ".", cwd=project)
    assert "NT110" not in out.stdout and "skip_me" not in out.stdout and "NT101" in out.stdout
    isolated = run_nantrap("lint", "bad.py", "--isolated", cwd=project)
    assert "NT110" in isolated.stdout
    (project / "pyproject.toml").write_text('[tool.nantrap]\nselekt = ["NT1"]\n')
    broken = run_nantrap("lint", "bad.py", cwd=project)
    assert broken.returncode == 2 and "unknown key(s) in [tool.nantrap]: selekt" in broken.stderr


def test_fix_and_diff(project: Path):
    diff = run_nantrap("lint", "bad.py", "--diff", cwd=project)
    assert diff.returncode == 1
    assert "-y = torch.log(torch.softmax(z, dim=1))" in diff.stdout
    assert "+y = torch.log_softmax(z, dim=1)" in diff.stdout
    assert (project / "bad.py").read_text() == BAD  # --diff changes nothing
    fixed = run_nantrap("lint", "bad.py", "--fix", cwd=project)
    assert fixed.returncode == 1  # NT110 has no safe fix and remains
    assert "Fixed 1 finding." in fixed.stderr
    assert (project / "bad.py").read_text() == BAD.replace(
        "torch.log(torch.softmax(z, dim=1))", "torch.log_softmax(z, dim=1)"
    )
    assert "NT101" not in fixed.stdout and "NT110" in fixed.stdout


def test_broken_files_do_not_stop_the_run(project: Path):
    (project / "broken.py").write_text("def f(:\n")
    (project / "latin.py").write_bytes(b"x = '\xff'\n")
    out = run_nantrap("lint", ".", cwd=project)
    assert out.returncode == 1
    assert "broken.py:1:1: NT901" in out.stdout and "latin.py:1:1: NT901" in out.stdout
    assert "bad.py:3:5: NT101" in out.stdout


def test_stdin(project: Path):
    import subprocess
    import sys

    from tests.conftest import SRC

    out = subprocess.run(
        [sys.executable, "-m", "nantrap", "lint", "-", "--stdin-filename", "t.py"],
        input=BAD,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC)},
        timeout=60,
    )
    assert out.returncode == 1 and out.stdout.startswith("t.py:3:5: NT101")


def test_notebook(project: Path):
    cells = [
        {"cell_type": "code", "source": ["import torch\n"], "metadata": {}, "outputs": []},
        {
            "cell_type": "code",
            "source": ["y = torch.log(torch.sigmoid(z))\n"],
            "metadata": {},
            "outputs": [],
        },
    ]
    (project / "nb.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}}))
    out = run_nantrap("lint", "nb.ipynb", cwd=project)
    assert out.stdout.startswith("nb.ipynb:cell 2:1:5: NT104"), out.stdout


def test_a_function_imported_from_another_linted_file_gets_its_callers_facts(tmp_path: Path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "losses.py").write_text(
        "import torch\n\n\ndef cross_entropy(p, y):\n    return -(y * torch.log(p)).sum(1).mean()\n"
    )
    (pkg / "train.py").write_text(
        "import torch\nfrom .losses import cross_entropy\n\n\ndef step(model, x, y):\n"
        "    probs = torch.softmax(model(x), dim=1)\n"
        "    return cross_entropy(probs, y)\n"
    )
    out = run_nantrap("lint", "pkg", "--format", "json", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    (f,) = json.loads(out.stdout)["findings"]
    assert f["code"] == "NT105" and f["location"]["line"] == 5  # hand-written CE on softmax
    assert f["location"]["path"].endswith("losses.py") and "train.py:7" in f["message"]
    alone = run_nantrap("lint", "pkg/losses.py", "--format", "json", cwd=tmp_path)
    assert all("train.py" not in g["message"] for g in json.loads(alone.stdout)["findings"])
