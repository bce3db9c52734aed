"""The fixed-text protocol: :mod:`~analysis.fixed_text.per_checkpoint` (the text set through one checkpoint),
:mod:`~analysis.fixed_text.per_run` (over one run), :mod:`~analysis.fixed_text.flips` (steering on fixed text),
:mod:`~analysis.fixed_text.summary` (headline numbers and answers) and :mod:`~analysis.fixed_text.sections` (its report
sections)."""
