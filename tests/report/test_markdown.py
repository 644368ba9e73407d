"""Markdown for issues: summary, the steps around the incident, the incident, actions."""

from __future__ import annotations

from nantrap.report.markdown import render_markdown
from nantrap.report.run_log import load_run
from tests.report.runs import LOG_LINE, diverging_run, domain_run


def test_divergence_in_markdown(tmp_path):
    diverging_run(tmp_path)
    text = render_markdown(load_run(tmp_path))
    assert text.startswith("## nantrap run report: MLP (ok)")
    assert "### Incident 1: step 37 — `NT301 learning-rate-divergence` [divergence]" in text
    assert "| 37 | NaN | Inf | — | 0.5 |" in text  # the table of steps around the incident
    assert "**What the policy did:** rolled back to step 30; lr 0.5 → 0.25 (retry 1)" in text
    assert "- step 37: rolled back" in text


def test_domain_incident_quotes_the_source(tmp_path):
    domain_run(tmp_path)
    text = render_markdown(load_run(tmp_path))
    assert f">{LOG_LINE:>5}      loss = -torch.log(picked).mean()" in text
    assert "| inputs[0] | torch.float32[64,1] | 0 | 0.93 | 37 | 0 | 0 | 0 |" in text
    assert "**Fix:** compute the loss from logits" in text
