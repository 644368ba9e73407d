"""nantrap: find, explain and fix NaN/Inf in neural-network training.

Three engines share one op table (:mod:`nantrap.ops`), one trap catalog
(:mod:`nantrap.traps`) and one data model (:mod:`nantrap.findings`):

- ``nantrap lint``: the traps in source, before anything runs;
- ``nantrap analyze``: every layer's value range, before training;
- the guard (``nantrap.torch.guard``, ``nantrap.keras.NanTrap``): during training.

Importing ``nantrap`` imports no ML framework; the framework edges
(``nantrap.torch``, ``nantrap.keras``, ``nantrap.tf``) are imported on demand.
"""

from nantrap.errors import NanTrapError, NantrapError
from nantrap.findings import (
    SCHEMA_VERSION,
    Category,
    Diagnosis,
    Finding,
    Location,
    Phase,
    Report,
    Severity,
)
from nantrap.traps import Trap, all_traps, get_trap

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Category",
    "Diagnosis",
    "Finding",
    "Location",
    "NanTrapError",
    "NantrapError",
    "Phase",
    "Report",
    "Severity",
    "Trap",
    "__version__",
    "all_traps",
    "get_trap",
]
