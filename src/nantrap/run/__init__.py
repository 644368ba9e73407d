"""``nantrap run script.py``: run an unchanged training script with the guard attached.

The runner is framework-neutral: it runs the script as ``__main__`` (``script``), attaches
each framework's guard when the script imports that framework (``attach``, ``imports``), and
writes the run folder and its report at the end, also on Ctrl-C or an exception
(``session``). The framework-specific patching lives in the edges
(``nantrap.torch.autoguard``).
"""

from nantrap.run.session import RunConfig, RunResult, run_guarded

__all__ = ["RunConfig", "RunResult", "run_guarded"]
