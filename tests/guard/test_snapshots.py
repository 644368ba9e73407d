import pytest

from nantrap.guard import SnapshotRing


def _ring(every=2, keep=2):
    live = {"w": 0}
    ring = SnapshotRing(every, keep, capture=lambda: dict(live), restore=lambda s: live.update(s))
    return ring, live


def test_due_every_n_steps_once():
    ring, _live = _ring(every=3)
    assert ring.due(0) and not ring.due(1) and ring.due(3)
    ring.take(3)
    assert not ring.due(3)


def test_keeps_newest_k_and_restores():
    ring, live = _ring(every=1, keep=2)
    for step in range(4):
        live["w"] = step * 10
        ring.take(step)
    assert ring.steps == [2, 3]
    live["w"] = -1
    snap = ring.restore_latest()
    assert snap.step == 3 and live["w"] == 30


def test_second_failure_goes_one_snapshot_further_back():
    ring, live = _ring(every=1, keep=3)
    for step in range(3):
        live["w"] = step
        ring.take(step)
    assert ring.restore_latest().step == 2
    assert ring.restore_latest().step == 1
    assert ring.steps == [0, 1]


def test_discard_after_drops_unverified_snapshots():
    ring, _live = _ring(every=1, keep=4)
    for step in range(4):
        ring.take(step)
    assert ring.discard_after(1) == 2
    assert ring.steps == [0, 1]


def test_take_after_rollback_replaces_newer_entries():
    ring, _live = _ring(every=1, keep=4)
    for step in range(4):
        ring.take(step)
    ring.take(2)
    assert ring.steps == [0, 1, 2]


def test_restore_without_snapshot_raises():
    ring, _ = _ring()
    with pytest.raises(LookupError):
        ring.restore_latest()


def test_state_dict_round_trip():
    ring, live = _ring(every=2, keep=2)
    live["w"] = 7
    ring.take(4, lr_scale=0.5)
    copy, copy_live = _ring(every=9, keep=9)
    copy.load_state_dict(ring.state_dict())
    assert copy.every == 2 and copy.keep == 2 and copy.steps == [4]
    assert copy.latest.lr_scale == 0.5
    copy.restore_latest()
    assert copy_live["w"] == 7
