"""`nantrap demo` is the main job: every scenario must end with the right verdict."""

import pytest

pytest.importorskip("torch")

from nantrap.torch import demo


def test_demo_gives_the_seed_verdicts(tmp_path):
    lines: list[str] = []
    status = demo.run_demo(log_dir=str(tmp_path), out=lines.append)
    text = "\n".join(lines)
    assert status == 0, text
    assert "MISSED" not in text
    # (a) log of softmax underflow, at the user's line, with the zero count
    assert "NT101 domain · log" in text and "underflowed to exactly 0" in text
    assert "> return -(F.one_hot(y, CLASSES) * torch.log(p)).sum(dim=-1).mean()" in text
    # (b) the fake loss: no NaN in the plain run, the clip trap under the guard
    assert "no NaN: loss" in text and "NT102 clip-trap" in text
    assert "is not being optimized" in text
    # (c) saturation then domain: log(1 - sigmoid) with the saturated count
    assert "NT104 domain · log" in text and "saturated" in text
    # (d) divergence: rollback lowers the LR and the run reaches a finite, low loss
    assert "NT301 divergence" in text and "rollback(s), LR 8 ->" in text
    assert "weights finite: True" in text
    for key in "abcd":
        assert (tmp_path / key / "events.jsonl").stat().st_size > 0


def test_demo_command_help(nantrap_cli):
    out = nantrap_cli("demo", "--help")
    assert out.returncode == 0 and "--framework" in out.stdout
