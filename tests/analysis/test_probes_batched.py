"""The batched torch probe solver (analysis/probes_torch.py) against the scikit-learn reference, and the
unembedding computed once per checkpoint in the model's dtype (analysis/unembed.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis import probes as pr
from analysis.capture import capture
from analysis.positions import KINDS, LABELS
from analysis.splits import problem_roles, role_mask
from analysis.unembed import describe, describe_layers, model_matrices
from tests.analysis.conftest import load
from tests.analysis.test_capture_stream import trace_records

OTHER = {"verdict": "truth", "truth": "verdict", "stated": "verdict"}


def _both(layers: list[np.ndarray], labels: dict, test: np.ndarray, **kw: object) -> tuple[dict, dict]:
    fits = [pr.probe_kind(lambda i: layers[i], len(layers), labels, test, solver=s, **kw) for s in ("sklearn", "torch")]
    return fits[0], fits[1]


def _assert_agree(ref: dict, new: dict, skip_layers: set[int] = frozenset()) -> int:
    compared = 0
    for label, (rows, w, _, md) in ref.items():
        rows_t, w_t, _, md_t = new[label]
        np.testing.assert_array_equal(md, md_t)
        for layer, (r, rt) in enumerate(zip(rows, rows_t, strict=True)):
            assert r.fit == rt.fit and r.n_train == rt.n_train
            if not r.fit or layer in skip_layers:
                continue
            assert abs(r.accuracy - rt.accuracy) <= 0.02, (label, layer, r, rt)
            assert r.auroc is None or abs(r.auroc - rt.auroc) <= 0.02, (label, layer, r, rt)
            assert abs(r.shuffled - rt.shuffled) <= 0.05, (label, layer, r, rt)
            assert pr.cosine(w[layer], w_t[layer]) > 0.99, (label, layer)
            compared += 1
    return compared


def test_torch_solver_agrees_with_sklearn_on_a_planted_direction() -> None:
    rng = np.random.default_rng(0)
    n, d, n_layers = 600, 32, 3
    groups = np.repeat(np.arange(n // 3), 3)
    test = role_mask(groups, problem_roles(n // 3, 0.2, 0.3, 0), "report")
    y = rng.integers(0, 2, n)
    labels = {"verdict": (y, 1 - y), "truth": ((y + (rng.random(n) < 0.2)) % 2, y)}
    layers = []
    for layer in range(n_layers):  # separability grows with depth; offset: the raw-unit bias matters
        direction = rng.standard_normal(d)
        direction /= np.linalg.norm(direction)
        layers.append(rng.standard_normal((n, d)) + np.outer(2 * y - 1, direction) * (0.5 + layer) + 5.0)
    ref, new = _both(layers, labels, test, seed=3)
    assert _assert_agree(ref, new) == len(labels) * n_layers
    assert new["verdict"][0][2].accuracy > 0.9  # the planted direction is found
    # raw-unit weights and biases reproduce the decisions the scores were computed from
    w, b = new["verdict"][1][2], float(new["verdict"][2][2])
    assert ((pr.predict(w, b, layers[2][test]) > 0) == y[test]).mean() == new["verdict"][0][2].accuracy


@pytest.mark.slow
def test_torch_solver_agrees_with_sklearn_on_real_tiny_activations(digit_dir: Path) -> None:
    model, tok = load(digit_dir)
    cap = capture(model, tok, trace_records(90))
    roles = problem_roles(int(cap["problem"].max()) + 1, 0.0, 0.3, 0)
    test = role_mask(cap["problem"], roles, "report")
    labels = {label: (cap[label], cap[OTHER[label]]) for label in LABELS}
    compared = 0
    for kind in KINDS:
        layers = [cap[f"act_{kind}"][:, i] for i in range(cap[f"act_{kind}"].shape[1])]
        ref, new = _both(layers, labels, test, min_per_class=5, kind=kind)
        # residual layer 0 at "(" and "=" is the same token's embedding at every site: nothing to fit there
        compared += _assert_agree(ref, new, skip_layers={0} if kind != "value" else set())
    assert compared >= 12, compared


def test_unembedding_once_per_checkpoint_matches_per_layer_numpy(qwen_dir: Path, digit_dir: Path) -> None:
    rng = np.random.default_rng(0)
    for path in (qwen_dir, digit_dir):  # untied (unembed + embed spaces) and tied (unembed only)
        model, tok = load(path)
        dirs = rng.standard_normal((4, model.config.hidden_size)).astype(np.float32)
        dirs[1] = 0.0  # a layer whose probe was not fit
        got = describe_layers(dirs, model, tok, k=5)
        mats = model_matrices(model)
        assert set(got) == {"0", "1", "2", "3"}
        for layer in (0, 2, 3):
            ref = describe(dirs[layer], mats, tok, 5)
            assert set(got[str(layer)]) == set(ref) == ({"unembed_W1", "unembed_W0"} | (
                {"embed_W1", "embed_W0"} if path == qwen_dir else set()))  # fmt: skip
            for key, toks in ref.items():
                assert [t for t, _ in got[str(layer)][key]] == [t for t, _ in toks]
                np.testing.assert_allclose([s for _, s in got[str(layer)][key]], [s for _, s in toks], atol=2e-4)
        no_gain = describe_layers(dirs, model, tok, k=5, gain=False)
        mats["gain"] = None
        assert [t for t, _ in no_gain["2"]["unembed_W1"]] == [
            t for t, _ in describe(dirs[2], mats, tok, 5)["unembed_W1"]
        ]
