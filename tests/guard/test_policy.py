from nantrap.guard import Action, Policy


def test_simple_policies_map_to_their_action():
    for name in ("raise", "warn", "skip", "stop"):
        assert Policy(name).decide().action is Action(name)


def test_rollback_decays_lr_and_is_bounded():
    policy = Policy("rollback", lr_decay=0.5, max_retries=2)
    first, second, third = (policy.decide() for _ in range(3))
    assert first.action is Action.ROLLBACK and first.lr_factor == 0.5 and first.retries == 1
    assert second.action is Action.ROLLBACK and second.retries == 2
    assert third.action is Action.STOP and "max_retries=2" in third.detail
    assert policy.lr_scale == 0.25


def test_progress_resets_retries():
    policy = Policy("rollback", max_retries=1)
    assert policy.decide().action is Action.ROLLBACK
    policy.progressed()
    assert policy.decide().action is Action.ROLLBACK
    assert policy.rollbacks == 2


def test_rollback_without_snapshot_stops():
    decision = Policy("rollback").decide(can_rollback=False)
    assert decision.action is Action.STOP and "snapshot" in decision.detail


def test_skip_escalates_when_state_is_corrupt():
    assert Policy("skip").decide(state_corrupt=True).action is Action.ROLLBACK
    assert Policy("skip").decide(state_corrupt=True, can_rollback=False).action is Action.STOP


def test_state_dict_round_trip():
    policy = Policy("rollback", lr_decay=0.3, max_retries=5)
    policy.decide()
    copy = Policy("skip")
    copy.load_state_dict(policy.state_dict())
    assert copy.state_dict() == policy.state_dict()
    assert copy.policy is Action.ROLLBACK and copy.lr_scale == 0.3 and copy.retries == 1


def test_rollback_skips_bad_data_without_touching_the_lr():
    policy = Policy("rollback")
    decision = policy.decide(bad_data=True)
    assert decision.action is Action.SKIP and "bad data" in decision.detail
    assert policy.lr_scale == 1.0 and policy.retries == 0
    assert Policy("rollback").decide(bad_data=True, state_corrupt=True).action is Action.ROLLBACK
