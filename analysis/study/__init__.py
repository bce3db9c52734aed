"""A study's combined report over runs: :mod:`~analysis.study.report` (RL minus control, metric by metric) and
:mod:`~analysis.study.plots` (its HTML)."""
