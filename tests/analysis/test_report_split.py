"""The untouched report split: fresh problems outside train and test, marked report, and scale-unit mistakes."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.config import AnalysisConfig, SteeringSettings
from analysis.splits import fresh_roles, report_count
from tasks.config import ConfigError
from tasks.countdown.dataset import DataConfig, draw_report_problems
from tasks.countdown.generate import generate_problems

DATA = DataConfig(num_operands=(3,), operand_max=20, target_max=None, train_size=300, test_size=40)


def test_fresh_report_problems_avoid_train_and_test_and_are_reproducible() -> None:
    seen = generate_problems(DATA.spec(), DATA.train_size + DATA.test_size, DATA.seed)
    fresh = draw_report_problems(DATA, 60, 7, seen)
    keys = {p.key() for p in seen}
    assert len(fresh) == 60 and not keys & {p.key() for p in fresh}
    assert len({p.key() for p in fresh}) == 60
    assert draw_report_problems(DATA, 60, 7, seen) == fresh
    assert draw_report_problems(DATA, 60, 8, seen) != fresh


def test_fresh_roles_mark_exactly_the_appended_problems_report() -> None:
    roles = fresh_roles(200, 0.2, 0.4, 0)
    n_rep = report_count(200, 0.4)
    assert n_rep == 80 and set(roles[-n_rep:]) == {"report"} and "report" not in set(roles[:-n_rep])
    assert (roles == "calibration").sum() == 40 and (roles == "train").sum() == 80
    assert np.array_equal(fresh_roles(200, 0.2, 0.4, 0), roles)


@pytest.mark.parametrize(
    ("steering", "field"),
    [({"scales": (0.0, 20.0)}, "steering.scales"), ({"scale": 12.0}, "steering.scale")],
)
def test_an_absolute_scale_under_relative_units_is_one_line_naming_the_field(steering: dict, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        AnalysisConfig(steering=SteeringSettings(**steering))
    msg = str(e.value)
    assert msg.startswith(field) and "\n" not in msg and "scale_unit=absolute" in msg
    AnalysisConfig(steering=SteeringSettings(scale_unit="absolute", scales=(0.0, 20.0)))  # fine in absolute units


def test_a_subset_of_problems_keeps_every_role_in_proportion() -> None:
    from analysis.splits import spread_over_roles

    roles = fresh_roles(400, 0.2, 0.3, 0)  # the report problems are the last 120
    chosen = spread_over_roles(roles, 200)
    assert len(chosen) == 200 and chosen == sorted(set(chosen))
    counts = {r: int((roles[chosen] == r).sum()) for r in ("calibration", "train", "report")}
    assert counts == {"calibration": 40, "train": 100, "report": 60}
