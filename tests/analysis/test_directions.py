"""Steering control directions and the relative steering scale (analysis/directions.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.directions import (
    absolute_scale,
    check_scale_unit,
    cosines,
    equal_norm,
    first_operand_parity,
    line_parity,
    logit_direction,
    mean_difference,
    residual_norm,
    site_expressions,
)
from analysis.hooks import record_residuals
from tasks.config import ConfigError
from tests.analysis.conftest import load
from train.base_tokenizer import verdict_token_ids


@pytest.mark.parametrize("which", ["qwen_dir", "digit_dir"])  # untied and tied lm_head
def test_logit_direction_is_the_models_own_verdict_logit(which: str, request: pytest.FixtureRequest) -> None:
    model, tok = load(request.getfixturevalue(which))
    model = model.double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a non-trivial gain, so a direction that forgot it would fail
        model.model.norm.weight.copy_(0.2 + 2 * torch.rand(model.config.hidden_size, generator=gen))
    this_id, not_id = verdict_token_ids(tok)
    direction = logit_direction(model, (this_id, not_id))
    corpus: list[str] = request.getfixturevalue("corpus")
    ids = torch.tensor([tok(corpus[0]).input_ids[-120:]])
    t = ids.shape[1]
    last = model.config.num_hidden_layers
    with torch.no_grad(), record_residuals(model, torch.zeros(t, dtype=torch.long), torch.arange(t)) as res:
        out = model(ids, output_hidden_states=True)
    h = res[last].numpy()  # output of the last decoder layer: the final norm's input
    # HF's last hidden_states entry is already through the final norm; the direction acts before it.
    torch.testing.assert_close(out.hidden_states[-1][0], model.model.norm(res[last]))
    eps = model.model.norm.variance_epsilon
    rms = np.sqrt((h**2).mean(-1) + eps)
    ours = h @ direction / rms
    theirs = (out.logits[0, :, this_id] - out.logits[0, :, not_id]).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-9)
    assert np.abs(theirs).max() > 1e-3  # a non-vacuous comparison


def test_logit_direction_order_points_towards_this(request: pytest.FixtureRequest) -> None:
    model, tok = load(request.getfixturevalue("qwen_dir"))
    a, b = verdict_token_ids(tok)
    assert tok.decode([a]).strip() == "this" and tok.decode([b]).strip() == "not"
    np.testing.assert_allclose(logit_direction(model, (a, b)), -logit_direction(model, (b, a)))


def test_mean_difference_recovers_a_planted_direction() -> None:
    rng = np.random.default_rng(0)
    n, d = 4000, 64
    planted = rng.standard_normal(d)
    y = rng.random(n) < 0.3
    x = rng.standard_normal((n, d)) + 5.0 + np.outer(y, 2 * planted)
    v = mean_difference(x, y)
    assert v @ planted / (np.linalg.norm(v) * np.linalg.norm(planted)) > 0.99
    np.testing.assert_allclose(mean_difference(x, y.astype(int)), v)
    with pytest.raises(ValueError, match="both classes"):
        mean_difference(x, np.zeros(n, dtype=bool))


def test_first_operand_parity_on_handmade_expressions() -> None:
    exprs = ["9 * 6 * 20", "6 + 9 - 20", "(9 - 20) * 6", "20 - 9 - 6", "-4 + 7", "((13 + 2)) / 5", "100 - 1"]
    assert first_operand_parity(exprs).tolist() == [1, 0, 1, 0, 0, 1, 0]
    assert first_operand_parity([]).shape == (0,)
    with pytest.raises(ValueError, match="no operand"):
        first_operand_parity(["( + )"])


def test_line_parity_and_site_expressions() -> None:
    assert line_parity(np.array([0, 1, 2, 3, 10, 7])).tolist() == [0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError):
        line_parity(np.array([0.5]))
    completion = (
        "We have the numbers 9, 20, 6 and need to reach 5. Let's try different combinations:\n"
        "- 9 * 6 * 20 = 1080 (not 5)\n- (9 - 20) * 6 = -66 (not 5)\n- 20 - 9 - 6 = 5 (this works)\n"
    )
    exprs = site_expressions(completion, (9, 20, 6), 5, [0, 1, 2])
    assert exprs == ["9 * 6 * 20", "(9 - 20) * 6", "20 - 9 - 6"]
    assert first_operand_parity(exprs).tolist() == [1, 1, 0]


def test_equal_norm_gives_unit_directions_and_cosines() -> None:
    rng = np.random.default_rng(1)
    probe = {1: rng.standard_normal(8) * 30, 2: rng.standard_normal(8) * 0.01}
    dirs = {"probe": probe, "logit": {1: -3 * probe[1], 2: rng.standard_normal(8)}, "mean_diff": {1: probe[1]}}
    units = equal_norm(dirs)
    for layers in units.values():
        for v in layers.values():
            assert np.linalg.norm(v) == pytest.approx(1.0)
    cos = cosines(units)
    assert set(cos) == {"logit", "mean_diff"}
    assert cos["logit"][1] == pytest.approx(-1.0) and cos["mean_diff"] == {1: pytest.approx(1.0)}
    raw = cosines(dirs)  # cosines do not depend on the norms
    assert all(raw[k] == pytest.approx(cos[k]) for k in cos)
    with pytest.raises(ValueError, match="'zero' at layer 3"):
        equal_norm({"zero": {3: np.zeros(4)}})


def test_residual_norm_and_absolute_scale() -> None:
    x = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
    assert residual_norm(x) == pytest.approx((5 + 1 + 10) / 3)
    assert absolute_scale(0.5, residual_norm(x)) == pytest.approx(16 / 6)
    with pytest.raises(ValueError):
        residual_norm(np.zeros((0, 4)))


def _one_line(exc: pytest.ExceptionInfo[ConfigError], field: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{field}: ")
    return msg


def test_check_scale_unit_catches_either_unit_mistake() -> None:
    with pytest.raises(ConfigError) as exc:
        check_scale_unit(20, "relative", 3.1, "steering.scale", layer=3)
    msg = _one_line(exc, "steering.scale")
    assert "20x the residual norm (3.1) at layer 3" in msg and "steering.scale_unit=absolute" in msg
    with pytest.raises(ConfigError) as exc:
        check_scale_unit(0.5, "absolute", 120.0, "steering.scales")
    msg = _one_line(exc, "steering.scales")
    assert "looks like a relative scale" in msg and "steering.scale_unit=relative" in msg
    with pytest.raises(ConfigError) as exc:
        check_scale_unit(1.0, "percent", 3.1, "steering.scale")
    _one_line(exc, "steering.scale_unit")
    for scale, unit, norm in [(0.5, "relative", 3.1), (4.0, "relative", 3.1), (0.0, "relative", 3.1)]:
        check_scale_unit(scale, unit, norm, "steering.scale")
    for scale, unit, norm in [(8.0, "absolute", 3.1), (60.0, "absolute", 120.0), (0.0, "absolute", 120.0)]:
        check_scale_unit(scale, unit, norm, "steering.scale")


def test_relative_scale_carries_across_widths() -> None:
    # the same fraction of each model's residual norm: absolute lengths in proportion to the norms
    small, large = residual_norm(np.ones((2, 64))), residual_norm(np.ones((2, 2048)) * 3)
    assert absolute_scale(0.5, large) / absolute_scale(0.5, small) == pytest.approx(large / small)
