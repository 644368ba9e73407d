"""The HTML page's content: self-contained, every section, incidents with their evidence."""

from __future__ import annotations

import re

from nantrap.report.html import render_html
from nantrap.report.run_log import load_run
from tests.report.runs import LOG_LINE, diverging_run, domain_run


def test_page_is_self_contained(tmp_path):
    diverging_run(tmp_path)
    page = render_html(load_run(tmp_path))
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert page.count("<svg") == 2
    ids = re.findall(r'id="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # figure ids do not collide


def test_incident_card_has_diagnosis_fix_action_and_catalog(tmp_path):
    diverging_run(tmp_path)
    page = render_html(load_run(tmp_path))
    card = page[page.index("id='incident-1'") :]
    assert "the learning rate is too high" in card
    assert "suggested_lr</dt><dd>0.05" in card
    assert "lower the learning rate about 10x" in card
    assert "rolled back to step 30; lr 0.5 → 0.25 (retry 1)" in card
    assert "nantrap explain NT301" in card
    assert "Early warnings (4)" in page
    assert "NT203" in page


def test_domain_card_shows_source_lines_and_input_statistics(tmp_path):
    domain_run(tmp_path)
    page = render_html(load_run(tmp_path))
    hit = re.search(r"<span class='hit'><span class='n'>\s*(\d+) </span>([^<]*)</span>", page)
    assert hit and int(hit.group(1)) == LOG_LINE
    assert hit.group(2) == "    loss = -torch.log(picked).mean()"
    row = "<td>inputs[0]</td><td>torch.float32[64,1]</td><td>0</td><td>0.93</td><td>37</td>"
    assert row in page
    assert "<td class='bad'>37</td>" in page  # 37 Inf in the output
    assert "raised NanTrapError" in page
    assert "badge error" in page


def test_source_line_from_the_record_when_the_file_is_gone(tmp_path):
    domain_run(tmp_path)
    (tmp_path / "train_src.py").unlink()
    page = render_html(load_run(tmp_path))
    assert "loss = -torch.log(picked).mean()" in page


def test_empty_folder_renders_a_page_that_says_so(tmp_path):
    page = render_html(load_run(tmp_path))
    assert "Parts of this run could not be read" in page
    assert "no events.jsonl in this folder" in page
    assert "No step records in this run." in page
