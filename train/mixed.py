"""The mixed table's cost C, term by term, and its model space (torch; exported into every graph).

The seed gives C for two kinds of input: the squared error for real values and the
cross-entropy for categories (a softmax over the category's slots; for a 0/1 input the binary
cross-entropy). For a table row y with columns j, missing flags m_j and decoder output o:

    C(y, ỹ) = Σ_numeric (1 − m_j)(ŷ_j − o_j)²                    ŷ_j = (y_j − shift_j) / scale_j
            + Σ_binary (1 − m_j)(softplus(o_j) − y_j o_j)        −log p(y_j), p = σ(o_j)
            + Σ_categorical (1 − m_j)(logsumexp(o_j,·) − o_j,k)  −log softmax(o_j)_k, k = y's slot
            + Σ_all (softplus(l_j) − m_j l_j)                    −log p(m_j), p = σ(l_j)

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
from torch.nn import functional as tf

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
        scalar = [j for j, (kind, _, _) in enumerate(columns) if kind != "categorical"]
        categorical = [j for j, (kind, _, _) in enumerate(columns) if kind == "categorical"]
        slots = [columns[j][1] for j in categorical]
        self.n_scalar, self.n_categorical, self.n_slots = len(scalar), len(categorical), sum(slots)
        self.widest = widest = max(slots, default=1)
        #: width of the model space [scalars | padded slots | flags] (encoder input, decoder output)
        self.width = self.n_scalar + self.n_categorical * widest + n

        def buffer(name, values, dtype=torch.long, persistent=False):
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=persistent)

        buffer("scalar_columns", scalar)
        buffer("categorical_columns", categorical)
        buffer("is_binary", [columns[j][0] == "binary" for j in scalar], torch.bool)
        buffer("last_slot", [k - 1 for k in slots], torch.float32)
        buffer("slot_range", list(range(widest)), torch.float32)
        buffer("pad_bias", [[0.0 if k < size else PAD for k in range(widest)] for size in slots] or [[0.0]],
               torch.float32)
        buffer("unpad_index", [i * widest + k for i, size in enumerate(slots) for k in range(size)])
        buffer("decoded_missing", [d for _, _, d in columns], torch.bool)
        # value terms come out as [scalars | categoricals]; this order puts them back in column order
        buffer("column_order", torch.argsort(torch.tensor(scalar + categorical, dtype=torch.long)).tolist())
        #: the fixed missing logit of columns training never saw missing: log(1 / (n + 1)), set by ``set_rows``
        self.register_buffer("missing_prior", torch.zeros(n))

    def set_rows(self, rows: int) -> None:
        """The rule of succession for never-missing columns: p(missing) = 1 / (rows + 2)."""
        self.missing_prior.fill_(-math.log(rows + 1.0))

    # -- rows (batch, 2n) <-> model space (batch, width) -------------------------------------
    def preprocess(self, y: torch.Tensor, shift: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        """Encoded rows -> ŷ: scalars standardised (0 when missing), one-hot slots (zeros when
        missing; an index beyond a column's slots is clamped to its last), then the flags."""
        n = self.n
        values, flags = y[:, :n], y[:, n:]  # (batch, n) each
        observed = 1.0 - flags
        scalars = ((values - shift[:n]) * inv_scale[:n] * observed).index_select(1, self.scalar_columns)
        index = torch.minimum(values.index_select(1, self.categorical_columns).clamp(min=0.0), self.last_slot)
        hot = (index.unsqueeze(2) == self.slot_range).to(y.dtype)  # (batch, n_categorical, widest)
        hot = hot * observed.index_select(1, self.categorical_columns).unsqueeze(2)
        return torch.cat([scalars, hot.flatten(1), flags], dim=1)

    def _parts(self, t: torch.Tensor):
        """(scalars, slots (batch, n_categorical, widest), flags) of a model-space tensor."""
        a, b = self.n_scalar, self.n_scalar + self.n_categorical * self.widest
        return t[:, :a], t[:, a:b].reshape(-1, self.n_categorical, self.widest), t[:, b:]

    def missing_logits(self, out: torch.Tensor) -> torch.Tensor:
        """l_j: decoded for columns training saw missing, the fixed prior for the others (batch, n)."""
        return torch.where(self.decoded_missing, self._parts(out)[2], self.missing_prior)

    def terms(self, y_hat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Each column's term of C (batch, n), summing to C (see the module docstring)."""
        target, hot, flags = self._parts(y_hat)
        scalar_out, logits, _ = self._parts(out)
        observed = 1.0 - flags
        diff = target - scalar_out
        scalar_terms = torch.where(self.is_binary, tf.softplus(scalar_out) - target * scalar_out, diff * diff)
        parts = [scalar_terms * observed.index_select(1, self.scalar_columns)]
        if self.n_categorical:
            logits = logits + self.pad_bias
            parts.append(_logsumexp(logits) * hot.sum(dim=2) - (hot * logits).sum(dim=2))
        value_terms = torch.cat(parts, dim=1).index_select(1, self.column_order)  # (batch, n), column order
        l = self.missing_logits(out)
        return value_terms + tf.softplus(l) - flags * l

    def gradient(self, out: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """∂C/∂out (batch, width), for explicit back-propagation (target propagation)."""
        target, hot, flags = self._parts(y_hat)
        scalar_out, logits, missing_out = self._parts(out)
        observed = (1.0 - flags).index_select(1, self.scalar_columns)
        scalar = torch.where(self.is_binary, torch.sigmoid(scalar_out) - target, 2.0 * (scalar_out - target)) * observed
        slots = torch.softmax(logits + self.pad_bias, dim=2) * hot.sum(dim=2, keepdim=True) - hot
        missing = (torch.sigmoid(missing_out) - flags) * self.decoded_missing.to(out.dtype)
        return torch.cat([scalar, slots.flatten(1), missing], dim=1)

    def rows(self, out: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output -> (rows (batch, 2n): numbers in raw units, p(true), the most likely slot,
        then p(missing); slot probabilities (batch, n_slots), each column's softmax)."""
        scalar_out, logits, _ = self._parts(out)
        n = self.n
        scalar = torch.where(self.is_binary, torch.sigmoid(scalar_out),
                             scalar_out * scale[:n].index_select(0, self.scalar_columns)
                             + shift[:n].index_select(0, self.scalar_columns))
        parts, slot_p = [scalar], out[:, :0]
        if self.n_categorical:
            logits = logits + self.pad_bias
            parts.append(logits.argmax(dim=2).to(out.dtype))
            slot_p = torch.softmax(logits, dim=2).flatten(1).index_select(1, self.unpad_index)
        values = torch.cat(parts, dim=1).index_select(1, self.column_order)
        return torch.cat([values, torch.sigmoid(self.missing_logits(out))], dim=1), slot_p
