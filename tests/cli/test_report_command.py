"""``nantrap report``: writes the page, Markdown on stdout, clear messages on bad input."""

from __future__ import annotations

from tests.conftest import run_nantrap
from tests.report.runs import diverging_run


def test_report_writes_html_into_the_run_folder(tmp_path):
    diverging_run(tmp_path)
    out = run_nantrap("report", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"wrote {tmp_path / 'report.html'}" in out.stderr
    assert "NT301" in (tmp_path / "report.html").read_text()


def test_report_markdown_to_stdout(tmp_path):
    diverging_run(tmp_path)
    out = run_nantrap("report", str(tmp_path), "--format", "md")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("## nantrap run report: MLP (ok)")
    assert not (tmp_path / "report.html").exists()


def test_missing_folder_is_a_usage_error(tmp_path):
    out = run_nantrap("report", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"nantrap report: {tmp_path / 'nope'}: no such run folder"


def test_empty_folder_is_an_input_error_and_writes_nothing(tmp_path):
    out = run_nantrap("report", str(tmp_path))
    assert out.returncode == 2
    assert "no events.jsonl in this folder" in out.stderr
    assert list(tmp_path.iterdir()) == []
    out = run_nantrap("report", str(tmp_path), "--format", "md")
    assert out.returncode == 2 and out.stdout == ""


def test_corrupt_line_warns_and_renders_the_rest(tmp_path):
    path = diverging_run(tmp_path)
    with path.open("a") as fh:
        fh.write('{"type": "step", "st')
    out = run_nantrap("report", str(tmp_path))
    assert out.returncode == 0
    assert "warning: events.jsonl:" in out.stderr and "not a JSON object" in out.stderr
    page = (tmp_path / "report.html").read_text()
    assert "Incident 1 · step 37" in page and "not a JSON object" in page


def test_report_needs_no_ml_framework(tmp_path):
    """Rendering a run folder imports no torch/tensorflow (only matplotlib for figures)."""
    import subprocess
    import sys

    from tests.conftest import SRC
    from tests.test_no_framework import BLOCK

    diverging_run(tmp_path)
    code = BLOCK + (
        "from nantrap.cli import main\n"
        f"raise SystemExit(main(['report', {str(tmp_path)!r}, '--format', 'md']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "NT301" in out.stdout
