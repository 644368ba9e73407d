"""Renderers: turn engine data (Findings, a guard run's events) into text people read.

One module per format. ``run_log`` reads a guard run folder; ``html`` and ``markdown``
render it (``nantrap report RUN_DIR``).
"""
