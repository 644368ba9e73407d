"""The TF half of ``nantrap demo``: every scenario's verdict, in one run."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from nantrap.tf.demo import run_demo


def test_demo_gives_the_expected_verdict_for_every_trap():
    lines: list[str] = []
    assert run_demo(out=lines.append) == 0
    text = "\n".join(lines)
    for expected in (
        "NT101 domain · log in compile_loss/cross_entropy",
        "underflowed to exactly 0",
        "NT102 clip-trap · clip in compile_loss/clipped_cross_entropy",
        "NT104 domain",
        "NT301 divergence",
        "rolled-back",
        "InvalidArgumentError: Nan in summary histogram for: weight_1",
        "5 of 5 verdicts as expected",
    ):
        assert expected in text, expected
    assert text.count("[ok ·") == 5
