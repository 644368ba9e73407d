"""The HTML report in a real headless browser: it renders, logs nothing, shows the incident."""

from __future__ import annotations

import struct
from pathlib import Path

from nantrap.report.html import render_html
from nantrap.report.run_log import load_run
from tests.report.browser import open_page
from tests.report.runs import diverging_run, domain_run


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_report_renders_in_chromium_without_console_errors(tmp_path):
    run = tmp_path / "run"
    diverging_run(run)
    page_path = run / "report.html"
    page_path.write_text(render_html(load_run(run)))
    shot = tmp_path / "report.png"
    page = open_page(page_path, shot, size=(1200, 2600))
    assert page.console == []
    assert "Incident 1 · step 37" in page.dom
    assert "NT301 learning-rate-divergence" in page.dom
    assert "rolled back to step 30; lr 0.5 → 0.25" in page.dom
    assert page.dom.count("<svg") == 2  # timeline + ranges, drawn inline
    assert _png_size(shot) == (1200, 2600)
    assert shot.stat().st_size > 50_000  # a page with figures, not a blank one


def test_source_lines_of_the_first_bad_op_render(tmp_path):
    run = tmp_path / "run"
    domain_run(run)
    page_path = run / "report.html"
    page_path.write_text(render_html(load_run(run)))
    page = open_page(page_path)
    assert page.console == []
    assert "loss = -torch.log(picked).mean()" in page.dom
    assert "log (aten.log.default)" in page.dom


def test_browser_helper_sees_console_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<p>x</p><script>undefined_function_call()</script>")
    page = open_page(bad)
    assert any("undefined_function_call" in line for line in page.console)
