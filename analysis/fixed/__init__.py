"""The fixed-text protocol: :mod:`~analysis.fixed.checkpoint` (the text set through one checkpoint),
:mod:`~analysis.fixed.run` (over one run), :mod:`~analysis.fixed.steer` (steering on fixed text),
:mod:`~analysis.fixed.summary` (headline numbers and answers) and :mod:`~analysis.fixed.report` (its report
sections)."""
