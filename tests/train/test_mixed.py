"""The mixed table's cost (train/mixed.py) against a hand computation of the lecture's terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aeserve.train.config import ModelConfig
from aeserve.train.graphs import graph_modules
from aeserve.train.mixed import MixedTable
from aeserve.train.registry import build_model

LAYOUT = ("numeric?", "categorical:3", "binary")  # columns: x (may be missing), c (2 categories + other), b


def _softplus(v):
    return math.log1p(math.exp(v))


def _hand_terms(row, out, shift, scale, rows):
    """Each column's term of C, written out: squared error, softmax cross-entropy, binary
    cross-entropy, and each column's missing-indicator term."""
    x, c, b, mx, mc, mb = row
    o = out  # [x̂, b logit, c logits (3), missing logits (3)]
    prior = -math.log(rows + 1.0)  # never-missing columns: p(missing) = 1 / (rows + 2)
    lx, lc, lb = o[5], prior, prior
    x_hat = (x - shift) / scale * (1 - mx)
    value_x = (1 - mx) * (x_hat - o[0]) ** 2
    logits = o[2:5]
    value_c = (1 - mc) * (math.log(sum(math.exp(v) for v in logits)) - logits[int(c)])
    value_b = (1 - mb) * (_softplus(o[1]) - b * o[1])
    return [value_x + _softplus(lx) - mx * lx, value_c + _softplus(lc) - mc * lc, value_b + _softplus(lb) - mb * lb]


def test_each_column_term_is_the_lecture_cost_and_the_terms_sum_to_c():
    table = MixedTable(LAYOUT)
    table.set_rows(98)
    shift, scale = torch.tensor([2.0, 0, 0, 0, 0, 0]), torch.tensor([4.0, 1, 1, 1, 1, 1])
    rows = torch.tensor([[6.0, 1, 1, 0, 0, 0],    # every cell observed
                         [0.0, 2, 0, 1, 0, 0],    # x missing, c in "other"
                         [3.0, 0, 0, 0, 1, 1]])   # c and b missing (never missing in training)
    out = torch.tensor([[0.5, -1.0, 0.2, 1.5, -0.3, -2.0, 0.7, 0.1]] * 3)
    # the model space puts the scalars first: x, b; then c's slots; then the flags
    y_hat = table.preprocess(rows, shift, 1.0 / scale)
    np.testing.assert_allclose(y_hat[0].numpy(), [1.0, 1.0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(y_hat[1].numpy(), [0.0, 0.0, 0, 0, 1, 1, 0, 0])
    terms = table.terms(y_hat, out)
    for row, got in zip(rows.tolist(), terms.tolist()):
        np.testing.assert_allclose(got, _hand_terms(row, out[0].tolist(), 2.0, 4.0, 98), rtol=1e-5)
    # b, never missing in 98 training rows, is missing in row 3: log(99) + log(1 + 1/99) nats
    assert abs(float(terms[2, 2]) - (math.log(99) + math.log1p(1 / 99))) < 1e-4


def _hand_layout_terms(layout, row, out, rows):
    """Any layout's column terms written out, one cell at a time (standardisation: shift 0, scale 1)."""
    columns = [(c.rstrip("?").split(":")[0], int(c.split(":")[1].rstrip("?")) if ":" in c else 1, c.endswith("?"))
               for c in layout]
    n = len(columns)
    scalars = [j for j, c in enumerate(columns) if c[0] != "categorical"]
    categorical = [j for j, c in enumerate(columns) if c[0] == "categorical"]
    widest = max([columns[j][1] for j in categorical], default=1)
    flag_out = out[len(scalars) + len(categorical) * widest:]
    terms = []
    for j, (kind, slots, decoded) in enumerate(columns):
        value, missing = row[j], row[n + j]
        if kind == "categorical":
            start = len(scalars) + categorical.index(j) * widest
            logits = out[start:start + slots]
            term = math.log(sum(math.exp(v) for v in logits)) - logits[int(value)]
        else:
            o = out[scalars.index(j)]
            term = _softplus(o) - value * o if kind == "binary" else (value - o) ** 2
        logit = flag_out[j] if decoded else -math.log(rows + 1.0)
        terms.append((1 - missing) * term + _softplus(logit) - missing * logit)
    return terms


@pytest.mark.parametrize("layout", [
    ("numeric", "categorical:3"),                  # value terms already in column order
    ("categorical:3", "numeric", "categorical:2"),  # reordered; slots padded to 3
    ("binary", "binary?"),                         # cross-entropy scalars only, one decoded indicator
    ("categorical:4?",),                           # categories only
    ("numeric?", "binary", "numeric"),             # squared error and cross-entropy mixed, no category
])
def test_every_layout_s_terms_are_the_hand_computed_ones(layout):
    table = MixedTable(layout)
    table.set_rows(20)
    n = len(layout)
    rng = np.random.default_rng(len(layout))
    rows = []
    for _ in range(6):
        values = [float(rng.integers(0, int(c.split(":")[1].rstrip("?")))) if c.startswith("categorical")
                  else float(rng.integers(0, 2)) if c.startswith("binary") else float(rng.normal())
                  for c in layout]
        flags = [float(rng.random() < 0.3) for _ in layout]
        rows.append([0.0 if f else v for v, f in zip(values, flags)] + flags)
    rows = torch.tensor(rows)
    out = torch.tensor(rng.normal(size=(6, table.width)), dtype=torch.float32)
    terms = table.terms(table.preprocess(rows, torch.zeros(2 * n), torch.ones(2 * n)), out)
    for row, o, got in zip(rows.tolist(), out.tolist(), terms.tolist()):
        np.testing.assert_allclose(got, _hand_layout_terms(layout, row, o, 20), rtol=1e-5, atol=1e-6)


def test_the_gradient_is_the_cost_s_own():
    table = MixedTable(LAYOUT)
    table.set_rows(10)
    rows = torch.tensor([[6.0, 1, 1, 0, 0, 0], [0.0, 2, 0, 1, 0, 1]])
    y_hat = table.preprocess(rows, torch.zeros(6), torch.ones(6))
    out = torch.randn(2, table.width, requires_grad=True)
    table.terms(y_hat, out).sum().backward()
    np.testing.assert_allclose(table.gradient(out.detach(), y_hat).numpy(), out.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_every_kind_s_graphs_take_table_rows_and_the_energy_sums_the_column_terms():
    torch.manual_seed(0)
    rows = torch.tensor([[6.0, 1, 1, 0, 0, 0], [0.0, 2, 0, 1, 0, 1], [3.0, 0, 1, 0, 0, 0]])
    for kind in ("ae", "dae", "cae", "vae", "lvm"):
        model = build_model(ModelConfig(kind=kind, n_features=6, hidden=(8,), latent=2, cost="mixed", table=LAYOUT))
        model.set_preprocessing(torch.zeros(6), torch.ones(6), rows=10)
        energy = graph_modules(model)["energy"]
        with torch.no_grad():
            total, *terms, contributions = energy(rows)
        assert contributions.shape == (3, 3)
        np.testing.assert_allclose(contributions.sum(dim=1).numpy(), terms[0].numpy(), rtol=1e-5)
        np.testing.assert_allclose(sum(terms).numpy(), total.numpy(), rtol=1e-5)
        with torch.no_grad():
            decoded, slot_p = graph_modules(model)["decoder"](torch.zeros(2, 2))
        assert decoded.shape == (2, 6) and slot_p.shape == (2, 3)
        np.testing.assert_allclose(slot_p.sum(dim=1).numpy(), 1.0, rtol=1e-5)


def test_the_manifest_knows_the_model_space_width_without_torch():
    from aeserve.manifest import Architecture

    layout = ("numeric?", "categorical:3", "binary", "categorical:7")
    arch = Architecture(kind="ae", n_features=8, hidden=(4,), latent=2, cost="mixed", table=layout)
    assert arch.model_width == MixedTable(layout).width == 2 + 2 * 7 + 4


def test_a_log_column_s_term_is_the_squared_error_of_its_signed_log_and_decodes_back_to_raw_units():
    """``--log``: ŷ = (sign(y)·log(1 + |y|) − shift) / scale, then the seed's squared error; the
    decoder's output maps back through sign(t)·(e^|t| − 1)."""
    layout = ("numeric:log?", "categorical:3", "numeric")
    table = MixedTable(layout)
    table.set_rows(50)
    shift, scale = torch.tensor([1.5, 0, 10.0, 0, 0, 0]), torch.tensor([2.0, 1, 5.0, 1, 1, 1])
    rows = torch.tensor([[999.0, 1, 12.0, 0, 0, 0],
                         [-3.0, 0, 8.0, 0, 0, 0],     # below every training value: still defined, and low
                         [0.0, 2, 10.0, 1, 0, 0]])   # the log column missing
    out = torch.tensor([[0.4, 0.1, 0.2, 1.0, -0.5, -1.0, 0.3, 0.2]] * 3)  # [a, n | c's 3 slots | 3 flag logits]
    terms = table.terms(table.preprocess(rows, shift, 1.0 / scale), out)
    for (a, _, x, missing, _, _), got in zip(rows.tolist(), terms.tolist()):
        g = math.copysign(math.log1p(abs(a)), a)
        flag_logit = -1.0  # a's decoded missing-indicator logit
        expected_a = (1 - missing) * ((g - 1.5) / 2.0 - 0.4) ** 2 + _softplus(flag_logit) - missing * flag_logit
        expected_n = ((x - 10.0) / 5.0 - 0.1) ** 2 + _softplus(-math.log(51.0))
        assert got[0] == pytest.approx(expected_a, rel=1e-5)
        assert got[2] == pytest.approx(expected_n, rel=1e-5)
    decoded, _ = table.rows(out[:1], shift, scale)
    assert float(decoded[0, 0]) == pytest.approx(math.expm1(0.4 * 2.0 + 1.5), rel=1e-5)  # raw units
    assert float(decoded[0, 2]) == pytest.approx(0.1 * 5.0 + 10.0, rel=1e-5)  # a plain column: as before
