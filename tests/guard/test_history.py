import math

import pytest

from nantrap.guard import EMA, History


def test_ema_tracks_mean_and_variance():
    ema = EMA(beta=0.9)
    for x in [1.0, 3.0] * 200:
        ema.update(x)
    assert ema.mean == pytest.approx(2.0, abs=0.1)
    assert ema.std == pytest.approx(1.0, abs=0.1)


def test_spike_needs_sigma_ratio_and_warmup():
    history = History(window=16, beta=0.9)
    for step in range(30):
        history.observe(step, loss=1.0 + 0.01 * (step % 3))
    assert history.spike(1.02, sigma=6, ratio=2, warmup=20) is None
    assert history.spike(1.5, sigma=6, ratio=2, warmup=20) is None  # many sigmas, < 2x
    spike = history.spike(5.0, sigma=6, ratio=2, warmup=20)
    assert spike is not None and spike.ratio == pytest.approx(5.0 / spike.mean)
    assert spike.sigmas > 6
    assert history.spike(math.nan, sigma=6, ratio=2, warmup=20) is None
    assert History().spike(50.0, sigma=6, ratio=2, warmup=20) is None  # no warm-up yet


def test_window_and_finite_series():
    history = History(window=4)
    for step in range(6):
        history.observe(step, loss=float(step), grad_norm=math.inf if step == 5 else 1.0)
    assert len(history) == 4
    assert [s for s, _ in history.finite("grad_norm")] == [2, 3, 4]
    assert history.last("grad_norm") == 1.0
    assert history.last("grad_norm", finite=False) == math.inf


def test_nonfinite_loss_does_not_poison_the_ema():
    history = History()
    history.observe(0, loss=1.0)
    history.observe(1, loss=math.nan)
    assert history.loss_ema.mean == 1.0 and history.loss_ema.count == 1


def test_state_dict_round_trip():
    history = History(window=8, beta=0.95)
    for step in range(10):
        history.observe(step, loss=step * 0.5, grad_norm=2.0, param_norm=3.0, lr=0.1)
        history.observe_ratio(step, 1e-3 * step)
    copy = History()
    copy.load_state_dict(history.state_dict())
    assert copy.state_dict() == history.state_dict()
    assert copy.spike(100.0, sigma=6, ratio=2, warmup=5) == history.spike(
        100.0, sigma=6, ratio=2, warmup=5
    )


def test_truncate_forgets_rolled_back_steps_and_rebuilds_the_ema():
    history = History()
    for step in range(10):
        history.observe(step, loss=1.0 if step < 6 else 1e6, param_norm=1.0)
        history.observe_ratio(step, 0.1)
    history.truncate(6)
    assert [s for s, _ in history.finite("loss")] == [0, 1, 2, 3, 4, 5]
    assert history.loss_ema.mean == 1.0 and history.loss_ema.count == 6
    assert [s for s, _ in history.ratios] == [0, 1, 2, 3, 4, 5]


def test_weights_growing_needs_steady_growth():
    history = History()
    for step in range(8):
        history.observe(step, param_norm=1.2**step)
    assert not history.weights_growing(steps=8, factor=3.0)  # needs 9 points
    history.observe(8, param_norm=1.2**8)
    assert history.weights_growing(steps=8, factor=3.0)  # 1.2^8 = 4.3
    assert not history.weights_growing(steps=8, factor=5.0)
    history.observe(9, param_norm=1.0)
    assert not history.weights_growing(steps=8, factor=3.0)
