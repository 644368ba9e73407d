import math

import pytest

from nantrap.errors import NanTrapError
from nantrap.findings import Category, Diagnosis, Location, Phase
from nantrap.guard import Action, GuardConfig, GuardEngine, Observation, Problem, Spike, read_events


class Trainer:
    """A dict-based stand-in for a framework edge: weights, lr, a capture/restore pair."""

    def __init__(self, tmp_path=None, **options):
        self.state = {"w": 1.0, "lr": 0.1}
        config = GuardConfig.from_options(log_dir=tmp_path, **options)
        self.engine = GuardEngine(
            config,
            framework="test",
            restore=self.state.update,
            lrs=lambda: [self.state["lr"]],
            scale_lr=self._scale,
        )
        self.engine.start(model="Model", optimizer="SGD")

    def _scale(self, factor):
        self.state["lr"] *= factor

    def good_step(self, loss=1.0):
        if self.engine.snapshot_due():
            self.engine.take_snapshot(dict(self.state))
        obs = Observation(loss=loss, has_loss=True, grad_norm=1.0, param_norm=abs(self.state["w"]))
        assert self.engine.classify(obs) is None
        self.state["w"] += 1.0
        self.engine.after_update(obs)


def _incident(step):
    return Diagnosis(code="NT103", message="log of 0", location=Location(step=step))


def test_classify_orders_problems():
    engine = Trainer().engine
    assert (
        engine.classify(Observation(param_norm=math.nan, inputs_finite=False))
        is Problem.CORRUPT_STATE
    )
    assert engine.classify(Observation(param_norm=1.0, inputs_finite=False)) is Problem.BAD_INPUT
    assert engine.classify(Observation(param_norm=1.0, grad_norm=math.inf)) is Problem.NONFINITE
    assert (
        engine.classify(Observation(loss=math.nan, has_loss=True, param_norm=1.0, grad_norm=1.0))
        is Problem.NONFINITE
    )
    assert engine.classify(Observation(param_norm=1.0, grad_norm=1.0)) is None


def test_rollback_restores_snapshot_decays_lr_and_records(tmp_path):
    t = Trainer(tmp_path, snapshot_every=2, snapshot_keep=2, max_retries=2)
    for _ in range(5):
        t.good_step()
    assert t.engine.ring.steps == [2, 4] and t.state["w"] == 6.0
    decision = t.engine.act(_incident(t.engine.step))
    assert decision.action is Action.ROLLBACK
    assert t.state == {"w": 5.0, "lr": 0.05} and t.engine.step == 4
    assert t.engine.diagnoses[-1].action == "rolled-back"
    # the snapshot holds lr 0.1: a second rollback (to the older one) applies the total decay
    t.engine.act(_incident(t.engine.step))
    assert t.state == {"w": 3.0, "lr": 0.025} and t.engine.step == 2
    stop = t.engine.act(_incident(t.engine.step))
    assert stop.action is Action.STOP and t.engine.stopped
    events = read_events(tmp_path / "events.jsonl")
    actions = [e for e in events if e["type"] == "action"]
    assert [a["action"] for a in actions] == ["rollback", "rollback", "stop"]
    assert actions[0]["to_step"] == 4 and actions[0]["lr_before"] == 0.1
    assert actions[0]["lr_after"] == 0.05 and actions[1]["retries"] == 2
    assert events[-1] == {"schema_version": 1, "type": "end", "step": 2, "status": "stopped"}


def test_progress_after_rollback_resets_retries():
    t = Trainer(snapshot_every=2, max_retries=1)
    for _ in range(3):
        t.good_step()
    t.engine.act(_incident(t.engine.step))
    for _ in range(3):
        t.good_step()
    assert t.engine.policy.retries == 0
    assert t.engine.act(_incident(t.engine.step)).action is Action.ROLLBACK


def test_raise_carries_the_diagnosis(tmp_path):
    t = Trainer(tmp_path, policy="raise")
    with pytest.raises(NanTrapError) as err:
        t.engine.act(_incident(0))
    assert err.value.diagnosis.code == "NT103" and err.value.diagnosis.action == "raised"
    assert read_events(tmp_path / "events.jsonl")[-1]["status"] == "error"


def test_corrupt_state_drops_unverified_snapshot():
    t = Trainer(policy="skip", snapshot_every=1, snapshot_keep=3)
    for _ in range(3):
        t.good_step()
    t.engine.take_snapshot({"w": math.nan, "lr": 0.1})  # taken at step 3, before the check
    decision = t.engine.act(_incident(3), state_corrupt=True)
    assert decision.action is Action.ROLLBACK and t.state["w"] == 3.0


def test_explain_prefers_divergence_and_keeps_the_op():
    t = Trainer()
    for step in range(10):
        t.engine.after_update(
            Observation(loss=2.0**step, has_loss=True, grad_norm=3.0**step, param_norm=1.0)
        )
    localized = Diagnosis(
        code="NT113",
        message="exp overflow",
        category=Category.OVERFLOW,
        location=Location(op="aten.exp.default", module="head", step=10, phase=Phase.FORWARD),
    )
    d = t.engine.explain(what="non-finite loss", localized=localized)
    assert d.code == "NT301" and d.module == "head" and d.op == "aten.exp.default"
    assert d.evidence["first_nonfinite"]["code"] == "NT113"
    calm = Trainer().engine
    assert calm.explain(what="x", localized=localized) is localized
    fallback = calm.explain(what="non-finite gradients", reason="replay was finite")
    assert fallback.code == "NT903" and "replay was finite" in fallback.message


def test_spike_modes():
    spike = Spike(loss=10.0, mean=1.0, std=0.1)
    warn = Trainer().engine
    assert warn.handle_spike(spike) is None and warn.diagnoses[-1].code == "NT302"
    skip = Trainer(on_spike="skip").engine
    assert skip.handle_spike(spike).action is Action.SKIP
    policy = Trainer(on_spike="policy", policy="warn").engine
    assert policy.handle_spike(spike).action is Action.WARN
    assert policy.diagnoses[-1].incident


def test_loss_scale_collapse_is_reported_once():
    engine = Trainer(min_loss_scale=1.0).engine
    for scale in (65536.0, 2.0, 0.5, 0.25):
        engine.after_update(Observation(grad_norm=1.0, param_norm=1.0, loss_scale=scale))
    codes = [d.code for d in engine.diagnoses]
    assert codes == ["NT201"]
    assert engine.diagnoses[0].category is Category.PRECISION
    assert engine.diagnoses[0].evidence["loss_scale"] == 0.5


def test_state_dict_round_trip(tmp_path):
    t = Trainer(tmp_path, snapshot_every=2)
    for _ in range(5):
        t.good_step(loss=1.0)
    t.engine.act(_incident(t.engine.step))
    state = t.engine.state_dict()
    copy = Trainer()
    copy.engine.load_state_dict(state)
    assert copy.engine.state_dict() == state
    assert copy.engine.step == t.engine.step and copy.engine.ring.steps == t.engine.ring.steps
    assert copy.engine.diagnoses == t.engine.diagnoses


def test_multi_process_diagnoses_carry_the_rank():
    engine = GuardEngine(
        GuardConfig(policy="warn"),
        framework="test",
        restore=dict,
        lrs=lambda: [0.1],
        scale_lr=lambda f: None,
        rank=3,
        world_size=4,
    )
    engine.act(_incident(5))
    engine.warn(Diagnosis(code="NT302", message="spike", incident=False))
    assert [d.location.rank for d in engine.diagnoses] == [3, 3]
    single = Trainer(policy="warn").engine
    single.act(_incident(1))
    assert single.diagnoses[0].location.rank is None


def test_bad_input_seen_on_another_rank_is_still_bad_data():
    from nantrap.guard.incidents import nonfinite_input

    d = nonfinite_input(4, {})
    assert d.code == "NT401" and "another rank" in d.message
    engine = Trainer(policy="rollback").engine
    assert engine.act(d).action is Action.SKIP  # the same decision as on the bad rank
