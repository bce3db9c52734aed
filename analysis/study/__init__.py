"""``make study``: :mod:`~analysis.study.driver` trains and analyses every run (as subprocesses of ``python -m
train`` and ``python -m analysis``; it sits in ``analysis/`` because it reads both layers), then the combined report
over runs: :mod:`~analysis.study.combined_report` (RL minus control, metric by metric) and
:mod:`~analysis.study.plots` (its HTML)."""
