import pytest

from nantrap.errors import ConfigError
from nantrap.guard import POLICIES, Action, GuardConfig


def test_defaults_are_valid_and_round_trip():
    config = GuardConfig()
    assert config.policy == "rollback"
    assert GuardConfig.from_state_dict(config.state_dict()) == config


def test_policies_match_actions():
    assert tuple(a.value for a in Action) == POLICIES


def test_unknown_policy_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        GuardConfig(policy="explode")
    assert "raise, warn, skip, rollback, stop" in str(err.value)
    assert "'explode'" in str(err.value)


def test_unknown_option_lists_known_names():
    with pytest.raises(ConfigError) as err:
        GuardConfig.from_options(policy="skip", snapshot_evry=3)
    assert "snapshot_evry" in str(err.value)
    assert "snapshot_every" in str(err.value)


@pytest.mark.parametrize(
    ("name", "value", "expect"),
    [
        ("lr_decay", 0.0, "(0.0, 1.0]"),
        ("lr_decay", 1.5, "(0.0, 1.0]"),
        ("max_retries", -1, ">= 0"),
        ("snapshot_every", 0, ">= 1"),
        ("snapshot_keep", 2.5, ">= 1"),
        ("on_spike", "panic", "warn, skip, policy, ignore"),
        ("localize", "yes", "True or False"),
        ("ema_beta", 1.0, "(0.0, 1.0)"),
    ],
)
def test_bad_values_say_what_is_allowed(name, value, expect):
    with pytest.raises(ConfigError) as err:
        GuardConfig.from_options(**{name: value})
    assert name in str(err.value) and expect in str(err.value)


def test_log_dir_accepts_paths(tmp_path):
    assert GuardConfig(log_dir=tmp_path).log_dir == str(tmp_path)
