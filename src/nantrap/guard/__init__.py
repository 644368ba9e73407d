"""The framework-neutral half of the training guard: policies, snapshots, history,
diagnosis and the event log. The framework edges (``nantrap.torch``, ``nantrap.keras``)
collect observations and carry out the decisions made here."""

from nantrap.guard.config import POLICIES, GuardConfig
from nantrap.guard.divergence import diagnose_divergence, diagnose_spike
from nantrap.guard.engine import GuardEngine, Observation, Problem
from nantrap.guard.events import EventLog, read_events
from nantrap.guard.history import EMA, History, Spike
from nantrap.guard.policy import Action, Decision, Policy
from nantrap.guard.snapshots import Snapshot, SnapshotRing
from nantrap.guard.stats import TensorStats

__all__ = [
    "EMA",
    "POLICIES",
    "Action",
    "Decision",
    "EventLog",
    "GuardConfig",
    "GuardEngine",
    "History",
    "Observation",
    "Policy",
    "Problem",
    "Snapshot",
    "SnapshotRing",
    "Spike",
    "TensorStats",
    "diagnose_divergence",
    "diagnose_spike",
    "read_events",
]
