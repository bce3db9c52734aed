"""The steering stage: :mod:`~analysis.steering.loop` (the KV-cached token-conditional generation loop),
:mod:`~analysis.steering.evaluate` (flip test and free generation) and :mod:`~analysis.steering.stage` (the
stage for one checkpoint: sweep, chosen scale, free generation, samples)."""
