"""``python -m analysis.study`` (``make study``): :mod:`analysis.study.driver`."""

from analysis.study.driver import main

raise SystemExit(main())
