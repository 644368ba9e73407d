"""``opt.guard.annotate``: the loop's epoch and batch reach the incident's card."""

from nantrap.guard import read_events
from nantrap.report.html import render_html
from nantrap.report.markdown import render_markdown
from nantrap.report.run_log import load_run
from tests.torch._guard_setup import batches, loop_step, make


def test_annotated_batch_and_epoch_show_on_the_incident_card(tmp_path):
    model, opt = make("skip", log_dir=tmp_path, snapshot_every=2)
    data = batches(4)
    for epoch in range(2):
        for i, (x, y) in enumerate(data):
            opt.guard.annotate(epoch=epoch, batch=i, micro_batch=0)
            loop_step(model, opt, x, y, poison=(epoch, i) == (1, 2))
    opt.guard.close()
    records = read_events(tmp_path / "events.jsonl")
    [context] = [r for r in records if r["type"] == "context"]
    assert context["step"] == 6 and context["epoch"] == 1 and context["batch"] == 2
    [incident] = load_run(tmp_path).incidents()
    assert incident.step == 6 and incident.batch == 2
    page = render_html(load_run(tmp_path))
    assert "step 6 · epoch 1, batch 2, micro batch 0" in page
    assert "<b>Where in the loop:</b> epoch 1, batch 2, micro batch 0" in page
    assert "step 6 · epoch 1, batch 2, micro batch 0 —" in render_markdown(load_run(tmp_path))
