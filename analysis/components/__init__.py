"""The component stage: :mod:`~analysis.components.measure` (attribution, ablation, patching),
:mod:`~analysis.components.stage` (the stage for one checkpoint) and :mod:`~analysis.components.section` (its
report section)."""
