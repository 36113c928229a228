"""The mixed table's cost C, term by term, and its model space (torch; exported into every graph).

The seed gives C for two kinds of input: the squared error for real values and the
cross-entropy for categories (a softmax over the category's slots; for a 0/1 input the binary
cross-entropy). For a table row y with columns j, missing flags m_j and decoder output o:

    C(y, ỹ) = Σ_numeric (1 − m_j)(ŷ_j − o_j)²                    ŷ_j = (g_j(y_j) − shift_j) / scale_j
            + Σ_binary (1 − m_j)(softplus(o_j) − y_j o_j)        −log p(y_j), p = σ(o_j)
            + Σ_categorical (1 − m_j)(logsumexp(o_j,·) − o_j,k)  −log softmax(o_j)_k, k = y's slot
            + Σ_all (softplus(l_j) − m_j l_j)                    −log p(m_j), p = σ(l_j)

g_j is the identity, or for a column trained with ``--log`` the signed log
g(y) = sign(y)·log(1 + |y|) (its inverse sign(t)·(e^|t| − 1) maps the decoder's output back to
raw units): a heavy-tailed amount's squared error is then on its order of magnitude, so that
its largest values do not dwarf every other column's error (docs/quality.md). shift_j and
scale_j are the statistics of g_j(y_j) over the training rows.

A missing cell does not enter the value terms; its column's missing-indicator does. For a
column that training saw missing, l_j is decoded like any other output, so an unusual pattern
of missing cells raises the energy; for a column training never saw missing, l_j is fixed at
the rule of succession, p = 1/(n + 2) for n training rows: such a cell costs log(n + 1) nats
more than an observed one, and an observed cell costs almost nothing (log(1 + 1/(n + 1))).
Each column's term (its value term plus its indicator term) is its exact share of C.

Model space ŷ (what the encoder reads and the decoder rebuilds), grouped by type:
[scalars: each numeric and binary column | one-hot slots of each categorical column (padded
to the widest) | the missing flags of every column]. The graphs' rows are the
runtime's encoding (``aeserve.columns``): value_j, then missing_j, for each column.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from aeserve.manifest import parse_table_layout, table_layout

__all__ = ["MixedTable", "column_layout", "table_options", "PAD"]

#: the config's compact description of a table's columns (``aeserve.manifest.table_layout``)
column_layout = table_layout


def table_options(specs: Sequence) -> dict:
    """The ModelConfig fields of a mixed table's columns (``Table.specs``): its layout and the
    mixed cost; nothing for plain rows."""
    return {"table": column_layout(specs), "cost": "mixed"} if specs else {}


#: the logit bias of a padding slot: exp(PAD - max) is 0 in fp32 and fp16, where -inf could make NaN
PAD = -1.0e4


def _logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """log Σ exp over the last axis, shifted by the max (ONNX Runtime's ReduceLogSumExp took
    twice as long as these five operations)."""
    top = logits.amax(dim=2, keepdim=True)
    return (top + (logits - top).exp().sum(dim=2, keepdim=True).log()).squeeze(2)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) = log(1 + eˣ) = max(x, 0) + log(1 + e^−|x|), stable for any x and written out:
    ONNX Runtime's Softplus kernel took 8% of a mixed energy graph, these four operations 1%."""
    return x.clamp(min=0.0) + (-x.abs()).exp().add(1.0).log()


def signed_log(x: torch.Tensor) -> torch.Tensor:
    """g(x) = sign(x)·log(1 + |x|): log1p for x ≥ 0, odd, monotone, defined everywhere (a value
    below any seen in training still maps below them). ``aeserve.transforms.signed_log`` in numpy."""
    return x.sign() * x.abs().add(1.0).log()


def signed_exp(t: torch.Tensor) -> torch.Tensor:
    """g⁻¹(t) = sign(t)·(e^|t| − 1), the inverse of ``signed_log``."""
    return t.sign() * t.abs().exp().sub(1.0)


def _take(t: torch.Tensor, columns: torch.Tensor, index: Sequence[int]) -> torch.Tensor:
    """``t[:, index]``: a slice when ``index`` is one run of consecutive columns (a view; the
    graphs' Gather copies), else ``index_select`` with ``columns``, the same index as a buffer."""
    if len(index) and list(index) == list(range(index[0], index[0] + len(index))):
        return t[:, index[0]:index[0] + len(index)]
    return t.index_select(1, columns)


class MixedTable(nn.Module):
    """The cost and the model space of one table layout (see the module docstring).

    Each categorical column's slots are padded to the widest column's (``widest``), so that
    one-hot inputs, logits, softmax and cross-entropy are whole (batch, columns, widest)
    tensors: no per-column operation and no gather in the graphs. A padding slot is never hot,
    and its logit carries the bias PAD, so its probability is 0."""

    def __init__(self, layout: Sequence[str]):
        super().__init__()
        columns = parse_table_layout(layout)
        self.n = n = len(columns)
        scalar = [j for j, (kind, _, _, _) in enumerate(columns) if kind != "categorical"]
        categorical = [j for j, (kind, _, _, _) in enumerate(columns) if kind == "categorical"]
        slots = [columns[j][1] for j in categorical]
        self.n_scalar, self.n_categorical, self.n_slots = len(scalar), len(categorical), sum(slots)
        self.widest = widest = max(slots, default=1)
        #: width of the model space [scalars | padded slots | flags] (encoder input, decoder output)
        self.width = self.n_scalar + self.n_categorical * widest + n

        def buffer(name, values, dtype=torch.long, persistent=False):
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=persistent)

        buffer("scalar_columns", scalar)
        buffer("categorical_columns", categorical)
        self._scalar, self._categorical = scalar, categorical  # the same, as lists (``_take``)
        binary = [columns[j][0] == "binary" for j in scalar]
        #: which value terms each scalar takes: squared error, binary cross-entropy, or some of each
        self._scalar_cost = "bce" if binary and all(binary) else "mixed" if any(binary) else "mse"
        buffer("is_binary", binary, torch.bool)
        buffer("last_slot", [k - 1 for k in slots], torch.float32)
        buffer("slot_range", list(range(widest)), torch.float32)
        buffer("pad_bias", [[0.0 if k < size else PAD for k in range(widest)] for size in slots] or [[0.0]],
               torch.float32)
        buffer("unpad_index", [i * widest + k for i, size in enumerate(slots) for k in range(size)])
        buffer("decoded_missing", [d for _, _, d, _ in columns], torch.bool)
        logged = [transform == "log" for _, _, _, transform in columns]
        #: which columns the graphs read through ``signed_log`` (None: none, and no such operations)
        self._logged = logged if any(logged) else None
        buffer("logged", logged, torch.bool)
        buffer("scalar_logged", [logged[j] for j in scalar], torch.bool)
        # value terms come out as [scalars | categoricals]; this order puts them back in column order
        buffer("column_order", torch.argsort(torch.tensor(scalar + categorical, dtype=torch.long)).tolist())
        self._reordered = scalar + categorical != list(range(n))  # else the value terms are in column order
        #: the fixed missing logit of columns training never saw missing: log(1 / (n + 1)), set by ``set_rows``
        self.register_buffer("missing_prior", torch.zeros(n))
        self._any_decoded = any(d for _, _, d, _ in columns)

    def set_rows(self, rows: int) -> None:
        """The rule of succession for never-missing columns: p(missing) = 1 / (rows + 2)."""
        self.missing_prior.fill_(-math.log(rows + 1.0))

    # -- rows (batch, 2n) <-> model space (batch, width) -------------------------------------
    def preprocess(self, y: torch.Tensor, shift: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        """Encoded rows -> ŷ: scalars standardised (0 when missing), one-hot slots (zeros when
        missing; an index beyond a column's slots is clamped to its last), then the flags."""
        n = self.n
        values, flags = y[:, :n], y[:, n:]  # (batch, n) each
        if self._logged is not None:
            values = torch.where(self.logged, signed_log(values), values)
        observed = 1.0 - flags
        scalars = _take((values - shift[:n]) * inv_scale[:n] * observed, self.scalar_columns, self._scalar)
        if not self.n_categorical:
            return torch.cat([scalars, flags], dim=1)
        index = torch.minimum(_take(values, self.categorical_columns, self._categorical).clamp(min=0.0),
                              self.last_slot)  # (batch, n_categorical)
        missing = _take(flags, self.categorical_columns, self._categorical) > 0.5
        index = torch.where(missing, -1.0, index)  # a missing cell's slots are all 0
        hot = (index.unsqueeze(2) == self.slot_range).to(y.dtype)  # (batch, n_categorical, widest)
        return torch.cat([scalars, hot.flatten(1), flags], dim=1)

    def _parts(self, t: torch.Tensor):
        """(scalars, slots (batch, n_categorical, widest) or None without categories, flags) of a
        model-space tensor."""
        a, b = self.n_scalar, self.n_scalar + self.n_categorical * self.widest
        slots = t[:, a:b].reshape(-1, self.n_categorical, self.widest) if self.n_categorical else None
        return t[:, :a], slots, t[:, b:]

    def missing_logits(self, out: torch.Tensor) -> torch.Tensor:
        """l_j: decoded for columns training saw missing, the fixed prior for the others (batch, n)."""
        return torch.where(self.decoded_missing, self._parts(out)[2], self.missing_prior)

    def terms(self, y_hat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Each column's term of C (batch, n), summing to C (see the module docstring).

        Written for the graphs' speed, each term computed only where it applies: the squared
        error on numeric columns, softplus on binary columns and decoded indicators; a
        never-missing column's indicator term is softplus(l) − m·l with l fixed, a constant
        and a product."""
        target, hot, flags = self._parts(y_hat)
        scalar_out, logits, _ = self._parts(out)
        parts = []
        if self.n_scalar:
            diff = target - scalar_out
            if self._scalar_cost == "mse":
                parts.append(diff * diff)
            else:
                bce = _softplus(scalar_out) - target * scalar_out
                parts.append(bce if self._scalar_cost == "bce" else torch.where(self.is_binary, bce, diff * diff))
        if self.n_categorical:
            logits = logits + self.pad_bias
            parts.append(_logsumexp(logits) * hot.sum(dim=2) - (hot * logits).sum(dim=2))
        value_terms = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # [scalars | categoricals]
        if self._reordered:
            value_terms = value_terms.index_select(1, self.column_order)  # (batch, n), column order
        # a categorical cell's one-hot is all 0 when missing: its term is 0 already
        observed = 1.0 - flags
        value_terms = value_terms * observed if self.n_scalar else value_terms
        if not self._any_decoded:  # l is the fixed prior: softplus(l), of (n,), folds to a constant
            return value_terms + _softplus(self.missing_prior) - flags * self.missing_prior
        l = self.missing_logits(out)
        return value_terms + _softplus(l) - flags * l

    def gradient(self, out: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """∂C/∂out (batch, width), for explicit back-propagation (target propagation)."""
        target, hot, flags = self._parts(y_hat)
        scalar_out, logits, missing_out = self._parts(out)
        observed = (1.0 - flags).index_select(1, self.scalar_columns)
        scalar = torch.where(self.is_binary, torch.sigmoid(scalar_out) - target, 2.0 * (scalar_out - target)) * observed
        missing = (torch.sigmoid(missing_out) - flags) * self.decoded_missing.to(out.dtype)
        if not self.n_categorical:
            return torch.cat([scalar, missing], dim=1)
        slots = torch.softmax(logits + self.pad_bias, dim=2) * hot.sum(dim=2, keepdim=True) - hot
        return torch.cat([scalar, slots.flatten(1), missing], dim=1)

    def rows(self, out: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output -> (rows (batch, 2n): numbers in raw units, p(true), the most likely slot,
        then p(missing); slot probabilities (batch, n_slots), each column's softmax)."""
        scalar_out, logits, _ = self._parts(out)
        n = self.n
        number = scalar_out * scale[:n].index_select(0, self.scalar_columns) \
            + shift[:n].index_select(0, self.scalar_columns)
        if self._logged is not None:
            number = torch.where(self.scalar_logged, signed_exp(number), number)
        scalar = torch.where(self.is_binary, torch.sigmoid(scalar_out), number)
        parts, slot_p = [scalar], out[:, :0]
        if self.n_categorical:
            logits = logits + self.pad_bias
            parts.append(logits.argmax(dim=2).to(out.dtype))
            slot_p = torch.softmax(logits, dim=2).flatten(1).index_select(1, self.unpad_index)
        values = torch.cat(parts, dim=1).index_select(1, self.column_order)
        return torch.cat([values, torch.sigmoid(self.missing_logits(out))], dim=1), slot_p
