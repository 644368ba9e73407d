"""The analysis as an HTML page: cards, ids, per-layer rows, escaping, self-contained, browser."""

from __future__ import annotations

import re

import pytest

from nantrap.analyze import Graph, Node, analyze_graph
from nantrap.analyze.render import render_html, write_html
from nantrap.errors import ConfigError
from nantrap.report.analysis_html import split_precondition
from tests.report.browser import open_page

SELF_CONTAINED = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", re.I)


def _external(page: str) -> list[str]:
    """Tags (not escaped text) that would load something from the network."""
    return [t for t in re.findall(r"<[a-zA-Z][^<>]*>", page) if SELF_CONTAINED.search(t)]


def _cards(page: str) -> list[str]:
    return re.findall(r"<div class='card [^']*' id='finding-\d+'>.*?</div></div>", page)


@pytest.fixture(scope="module")
def classifiers():
    """The seeded log(softmax) classifier and its log_softmax twin, analyzed once."""
    torch = pytest.importorskip("torch")
    from nantrap.analyze import analyze
    from tests.analyze.models import torch_models as M

    torch.manual_seed(0)
    x = (torch.rand(2, 8),)
    ranges = {"x": "-1000:1000"}
    bad = analyze(M.Classifier().eval(), x, input_ranges=ranges)
    fixed = analyze(M.Classifier(fixed=True).eval(), x, input_ranges=ranges)
    return bad, fixed


def test_seeded_model_card_path_precondition_and_rows(classifiers):
    bad, _ = classifiers
    page = render_html(bad)
    assert _external(page) == [] and "<script" not in page
    assert "<span class='badge error'>1 error</span>" in page
    assert "<div class='verdict'><b>First error:</b> NT101 log-of-probability" in page
    assert "<dt>input x</dt><dd>[-1000, 1000]</dd>" in page
    assert "<dt>frontend</dt><dd>torch</dd>" in page and "<dt>dtype</dt><dd>float32</dd>" in page
    cards = _cards(page)
    assert [re.search(r"href='#trap-(NT\d+)'", c).group(1) for c in cards] == ["NT101", "NT204"]
    card = cards[0]
    assert "card sev-error" in card and "log-of-probability</a>" in card
    assert "<p class='path'>log ← softmax ← linear head ← relu ← linear fc1</p>" in card
    assert "torch_models.py:144" in card  # the source line, and the line itself
    assert "<span class='hit'><span class='n'>  144 </span>" in card
    assert "return torch.log(torch.softmax(logits, dim=-1))" in card
    assert "<dt>input range</dt><dd>[0, 1]</dd>" in card
    assert "<dt>output range</dt><dd>[-Inf, 0]</dd>" in card
    assert "<b>Fix:</b> replace log(softmax(x)) by log_softmax(x)" in card
    pre = re.search(r"<b>Precondition:</b> Safe \(for these weights\) while x in \[([^]]+)\]", card)
    lo, hi = (float(v) for v in pre.group(1).split(","))
    assert lo == -hi and 1 < hi < 1000  # a real, narrower input box than the given one
    assert "Safe (for these weights)" not in card[: card.index("<b>Precondition:")]
    # the card's node links to its row; the row is highlighted; the code links to the catalog
    row_id = re.search(r"<dd><a href='#(layer-\d+)'>log</a></dd>", card).group(1)
    row = re.search(rf"<tr id='{row_id}'[^>]*>.*?</tr>", page).group(0)
    assert "class='hazard'" in row and "<td>[-Inf, 0]</td>" in row and "nan/inf" in row
    assert re.search(r"<tr id='layer-\d+' class='flag'><td>—</td><td class='l'>softmax", page)
    assert page.count("<tr id='layer-") == len(bad.layers) == 5
    assert "id='trap-NT101'" in page and "What goes wrong" in page
    ids = re.findall(r"id='([^']+)'", page)
    assert len(ids) == len(set(ids))
    links = set(re.findall(r"href='#([^']+)'", page))
    assert links <= set(ids)  # every in-page link has its target


def test_fixed_twin_is_clean_and_flagged_table_option(classifiers):
    _, fixed = classifiers
    page = render_html(fixed)
    assert "<span class='badge ok'>clean</span>" in page and "verdict clean" in page
    assert _cards(page) == [] and "id='hazards'" not in page and "id='catalog'" not in page
    assert page.count("<tr id='layer-") == 4 and "log_softmax" in page
    assert "class='hazard'" not in page and "class='flag'" not in page
    assert "id='layers'" not in render_html(fixed, table="flagged")  # no flagged rows
    assert render_html(classifiers[0], table="flagged").count("<tr id='layer-") == 2
    with pytest.raises(ConfigError, match="choose full, flagged or none"):
        render_html(fixed, table="some")


def _hostile_graph():
    """An IR graph whose names carry markup, an unsupported op (NT902), a div by it."""
    evil = "<img src=https://x.test/a.png onerror=alert(1)>&\"'"
    nodes = [
        Node("x", "placeholder", kind="input", dtype="float32", shape=(2, 4)),
        Node("a<b>", "aten.erfinv.default", inputs=("x",), dtype="float32", shape=(2, 4)),
        Node(
            "d&d",
            "aten.div.Tensor",
            neutral="div",
            inputs=("x", "a<b>"),
            dtype="float32",
            shape=(2, 4),
            module=evil,
        ),
    ]
    return Graph.build(nodes, outputs=("d&d",), framework="ir", name="Net<script>alert(1)</script>")


def test_names_are_escaped_coverage_note_and_self_contained(tmp_path):
    result = analyze_graph(_hostile_graph(), input_ranges={"x": "1:2"})
    assert {f.code for f in result.findings} == {"NT110", "NT902"}
    page = render_html(result)
    assert "<script" not in page and "<img" not in page and "<link" not in page
    assert _external(page) == []
    assert "Net&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=https://x.test/a.png onerror=alert(1)&gt;&amp;&quot;&#x27;" in page
    (card,) = _cards(page)
    assert "<div class='verdict warn'><b>First warning:</b> NT110" in page
    assert "card sev-warning" in card and "unproven" in card  # its divisor's range is unknown
    assert "<dd><a href='#layer-2'>d&amp;d</a></dd>" in card
    note = page[page.index("id='coverage'") :]
    assert "aten.erfinv.default" in note and "nodes: a&lt;b&gt;" in note
    assert "id='trap-NT902'" in page and "id='trap-NT110'" in page
    assert "<h2 id='hazards'>Hazards (1 warning, 1 note)</h2>" not in page  # NT902 not a card
    assert "<h2 id='hazards'>Hazards (1 warning)</h2>" in page
    assert "id='warnings'" not in page
    unranged = render_html(analyze_graph(_hostile_graph()))
    assert "id='warnings'" in unranged and "no range given for input(s) x" in unranged
    out = write_html(result, tmp_path / "analysis.html")
    assert out.read_text(encoding="utf-8") == page


def test_split_precondition():
    fix = "use log_softmax. Safe (for these weights) while x in [-1, 1]. For the given input"
    assert split_precondition(fix + " ranges it is safe") == (
        "use log_softmax.",
        "Safe (for these weights) while x in [-1, 1]. For the given input ranges it is safe",
    )
    assert split_precondition("clamp it") == ("clamp it", None)
    assert split_precondition("x. The search found no input range or weight bound: design")[1] == (
        "The search found no input range or weight bound: design"
    )


def test_page_renders_in_chromium_without_console_errors(classifiers, tmp_path):
    path = write_html(classifiers[0], tmp_path / "analysis.html")
    shot = tmp_path / "analysis.png"
    page = open_page(path, shot, size=(1200, 1900))
    assert page.console == []
    assert "NT101 log-of-probability" in page.dom and "Per-layer ranges (5)" in page.dom
    assert shot.stat().st_size > 30_000  # a drawn page, not a blank one
