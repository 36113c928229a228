"""Training on windows: held-out windows share no row with training ones, scaling is per channel,
and a window's energy is the seed's F(y) = ‖ŷ − ỹ‖² + λ‖h‖₁ computed here by hand."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import load_file

import aeserve
from aeserve.series import SeriesWindows
from aeserve.train.data import split_windows, window_preprocessing


def test_held_out_windows_share_no_row_with_training_windows():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3000, 2)).astype(np.float32)
    series = np.repeat([0, 1, 2], 1000)
    found = SeriesWindows(20, 2).push(values, None, series)
    split = split_windows(found.ends, series[found.ends], 20, 0.2, seed=3)
    assert 0.1 < len(split.val) / len(found.ends) < 0.3 and len(split.train) > 0.6 * len(found.ends)
    for s in range(3):
        train = found.ends[split.train][series[found.ends[split.train]] == s]
        held = found.ends[split.val][series[found.ends[split.val]] == s]
        if len(held) and len(train):
            # rows of a window ending at e: e-19..e; two windows share a row when their ends are < 20 apart
            assert np.abs(train[:, None] - held[None, :]).min() >= 20
    again = split_windows(found.ends, series[found.ends], 20, 0.2, seed=3)
    assert np.array_equal(again.val, split.val)  # the seed decides


def test_scaling_is_per_channel_and_the_same_at_every_lag():
    rng = np.random.default_rng(1)
    rows = np.stack([rng.normal(5, 2, 500), rng.normal(-1, 0.5, 500)], axis=1).astype(np.float32)
    windows = SeriesWindows(8, 2).push(rows).values
    prep = window_preprocessing(windows, 2, 8, "mse")
    shift, scale = np.asarray(prep.shift).reshape(2, 8), np.asarray(prep.scale).reshape(2, 8)
    assert (shift == shift[:, :1]).all() and (scale == scale[:, :1]).all()
    cells = windows.reshape(-1, 2, 8).transpose(0, 2, 1).reshape(-1, 2)
    np.testing.assert_allclose(shift[:, 0], cells.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scale[:, 0], cells.std(axis=0), rtol=1e-5)


def test_a_windows_energy_is_the_seeds_formula_by_hand(series_bundle):
    """ae: F(y) = ‖ŷ − Dec(Enc(ŷ))‖² + λ‖h‖₁, ŷ = (window − shift) / scale, relu MLPs, from the
    bundle's weights with numpy alone; the exported graph gives the same energy."""
    model = aeserve.load(series_bundle["path"], backend="onnxruntime")
    weights = load_file(str(series_bundle["path"] / "weights.safetensors"))
    windows = model.bundle.kept_rows()[1][:32]  # (32, 3 x 16) validation windows, channel-major
    y_hat = (windows - weights["shift"]) / weights["scale"]

    def stack(x, prefix):
        layers = len([k for k in weights if k.startswith(prefix) and k.endswith(".weight")])
        for i in range(layers):
            x = x @ weights[f"{prefix}.{i}.weight"].T + weights[f"{prefix}.{i}.bias"]
            if i < layers - 1:
                x = np.maximum(x, 0.0)
        return x

    h = stack(y_hat, "encoder_layers")
    y_tilde = stack(h, "decoder_layers")
    sparsity = model.bundle.manifest.energy.weight
    by_hand = ((y_hat - y_tilde) ** 2).sum(axis=1) + sparsity * np.abs(h).sum(axis=1)
    np.testing.assert_allclose(model.energy(windows)["energy"], by_hand, rtol=1e-4)
