import math

import pytest

from nantrap.findings import Category, Phase
from nantrap.guard import History, diagnose_divergence, diagnose_spike
from nantrap.guard.divergence import divergence_evidence


def _diverging_history(lr_growth=2.0, steps=12):
    history = History(window=32)
    for step in range(steps):
        g = 1.3 * lr_growth**step
        history.observe(
            step, loss=0.9 * lr_growth**step, grad_norm=g, param_norm=10.0 * 1.5**step, lr=5.0
        )
        history.observe_ratio(step, 0.8)
    return history


def test_divergence_quotes_the_history_and_suggests_a_lower_lr():
    d = diagnose_divergence(_diverging_history(), step=12, lr=5.0, trigger="NaN gradients")
    assert d is not None
    assert d.code == "NT301" and d.category is Category.DIVERGENCE
    assert d.phase is Phase.UPDATE and d.step == 12
    ev = d.evidence
    assert ev["update_ratio_max"] == pytest.approx(0.8)
    assert ev["grad_norm_growth"] == pytest.approx(2.0**11)
    assert ev["grad_norm_growth_steps"] == 11
    assert set(ev["signals"]) == {"update_ratio", "grad_norm", "weight_norm", "loss_runaway"}
    assert ev["suggested_lr"] < 5.0 * 0.5
    # growth x2 per step -> lr*h = 3 -> lr / 3 puts it at 1
    assert ev["suggested_lr"] == pytest.approx(5.0 / 3.0)
    assert "0.8" in d.message and "2.05e+03x over 11 steps" in d.message
    assert "too high" in d.message and f"{ev['suggested_lr']:.3g}" in d.fix


def test_healthy_history_is_not_divergence():
    history = History()
    for step in range(20):
        history.observe(step, loss=2.0 / (step + 1), grad_norm=1.0, param_norm=10.0, lr=0.01)
        history.observe_ratio(step, 1e-3)
    assert diagnose_divergence(history, step=20, lr=0.01) is None
    forced = diagnose_divergence(
        history, step=20, lr=0.01, force=True, trigger="non-finite weights after the update"
    )
    assert forced is not None and forced.evidence["signals"] == []
    assert forced.evidence["suggested_lr"] == pytest.approx(0.005)


def test_grad_growth_alone_without_ratio_samples():
    history = History()
    for step in range(8):
        history.observe(step, loss=float(3**step), grad_norm=float(3**step), lr=1.0)
    d = diagnose_divergence(history, step=8, lr=1.0)
    assert d is not None and d.evidence["signals"] == ["grad_norm"]
    # x3 per step: lr*h = 4, lr / 4 gives 1
    assert d.evidence["suggested_lr"] == pytest.approx(1.0 / 4.0)


def test_spike_diagnosis_is_a_warning_with_numbers():
    from nantrap.guard import Spike

    d = diagnose_spike(Spike(loss=9.0, mean=1.0, std=0.5), step=40, sigma=6.0)
    assert d.code == "NT302" and not d.incident
    assert d.evidence["sigmas"] == pytest.approx(16.0)
    assert "9" in d.message and "16" in d.message
    assert math.isfinite(d.evidence["ratio"])


def test_ratio_estimate_when_the_gradient_is_not_growing():
    history = History()
    for step in range(6):
        history.observe(step, loss=1.0, grad_norm=1.0, param_norm=1.0, lr=2.0)
        history.observe_ratio(step, 0.5)
    d = diagnose_divergence(history, step=6, lr=2.0)
    assert d is not None and d.evidence["signals"] == ["update_ratio"]
    assert d.evidence["suggested_lr"] == pytest.approx(2.0 * 1e-2 / 0.5)


def test_an_explosion_past_the_linear_regime_suggests_a_tenth_not_a_ten_thousandth():
    history = History()
    for step, g in enumerate((0.6, 0.5, 4e4, 1.5e14)):  # x6e4 per step at the end
        history.observe(step, loss=float(g), grad_norm=g, param_norm=5.0 * 10**step, lr=6.0)
        history.observe_ratio(step, 0.7)
    d = diagnose_divergence(history, step=4, lr=6.0)
    assert d is not None
    assert d.evidence["suggested_lr"] == pytest.approx(0.6)
    assert d.evidence["lr_too_high_factor"] == pytest.approx(10.0)
    assert "past the linear regime" in d.fix


def test_a_runaway_weight_norm_alone_is_divergence_under_clipping():
    """Clipping pins the grad norm at 1, the loss is unknown (loop form): the weight norm
    rising 5x a step for 8 steps is the evidence."""
    history = History(window=32)
    for step in range(12):
        norm = 900.0 if step < 4 else 900.0 * 5.0 ** (step - 3)
        history.observe(step, grad_norm=1.0, param_norm=norm, lr=1e3)
    d = diagnose_divergence(history, step=11, lr=1e3)
    assert d is not None and d.evidence["signals"] == ["weight_norm_runaway"]
    assert d.evidence["weight_norm_rising_steps"] == 8
    assert d.evidence["weight_norm_rising_growth"] == pytest.approx(5.0**8)
    assert "weight norm rose on each of the last 8 steps, 3.91e+05x" in d.message


def test_a_runaway_loss_alone_is_divergence():
    history = History(window=32)
    for step in range(10):
        history.observe(step, loss=2.3 * 2.0**step, grad_norm=1.0, param_norm=10.0, lr=1.0)
    d = diagnose_divergence(history, step=9, lr=1.0)
    assert d is not None and d.evidence["signals"] == ["loss_runaway"]
    assert d.evidence["loss_rising_steps"] == 9
    assert "loss rose on each of the last 9 steps, 512x" in d.message


def _runaways(history: History, step: int) -> set[str]:
    d = diagnose_divergence(history, step=step, lr=0.1)
    return {"loss_runaway", "weight_norm_runaway"} & set(d.evidence["signals"] if d else ())


def test_no_runaway_on_noisy_training_or_a_slow_rise():
    history = History(window=64)
    for step in range(64):  # noisy decreasing loss, weight norm creeping up 2% a step
        loss = 2.3 * 0.97**step * (1.3 if step % 3 == 0 else 1.0)
        history.observe(step, loss=loss, grad_norm=1.0, param_norm=10.0 * 1.02**step, lr=0.1)
    assert not _runaways(history, 63)
    history = History(window=64)
    for step in range(20):  # a steady rise, 10x over 19 steps: not a runaway
        history.observe(step, loss=1.0 + 0.5 * step, grad_norm=1.0, param_norm=10.0, lr=0.1)
    assert not _runaways(history, 19)
    assert history.rising("loss") == (19, pytest.approx(10.5))


def test_a_clipped_gradient_norm_sets_no_bound_the_update_ratio_does():
    history = History(window=32)
    for step in range(10):  # clip_grad_norm_(..., 1.0): the norm sits at 1 +- float error
        g = 1.0 - 1e-7 * (step % 3)
        history.observe(step, loss=2.0 + step, grad_norm=g, param_norm=10.0 * 1.3**step, lr=5.0)
    history.observe_ratio(0, 1.4)
    d = diagnose_divergence(history, step=10, lr=5.0)
    assert d is not None and d.evidence["grad_norm_clipped_at"] == pytest.approx(1.0)
    assert d.evidence["suggested_lr"] == pytest.approx(5.0 * 1e-2 / 1.4)
    assert "grad norm flat at 1 (as under clipping)" in d.message
    # without a sampled ratio: a tenth, not the ~half that "grad norm x1 per step" gave
    history.ratios.clear()
    d = diagnose_divergence(history, step=10, lr=5.0)
    assert d.evidence["suggested_lr"] == pytest.approx(0.5)


def test_an_unclipped_noisy_norm_is_not_read_as_clipped():
    history = History(window=32)
    for step in range(10):
        history.observe(step, grad_norm=1.0 + 0.05 * (step % 4), param_norm=10.0, lr=0.1)
    assert "grad_norm_clipped_at" not in divergence_evidence(history, 0.1)
