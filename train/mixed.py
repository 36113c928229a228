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
[scalars: each numeric and binary column | one-hot slots of each categorical column | the
missing flags of every column]. The graphs' rows are the runtime's encoding
(``aeserve.columns``): value_j, then missing_j, for each column.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as tf

__all__ = ["MixedTable", "column_layout"]


def column_layout(columns: Sequence) -> tuple[str, ...]:
    """The config's compact description of the columns: 'numeric', 'binary' or 'categorical:K'
    (K slots), with '?' when training saw the column missing."""
    out = []
    for c in columns:
        text = f"categorical:{c.slots}" if c.type == "categorical" else c.type
        out.append(text + ("?" if c.may_be_missing else ""))
    return tuple(out)


def _parse(layout: Sequence[str]) -> list[tuple[str, int, bool]]:
    parsed = []
    for entry in layout:
        decoded = entry.endswith("?")
        kind, _, slots = entry.rstrip("?").partition(":")
        if kind not in ("numeric", "binary", "categorical") or (kind == "categorical") != bool(slots):
            raise ValueError(f"bad column layout entry {entry!r}")
        parsed.append((kind, int(slots) if slots else 1, decoded))
    return parsed


class MixedTable(nn.Module):
    """The cost and the model space of one table layout (see the module docstring)."""

    def __init__(self, layout: Sequence[str]):
        super().__init__()
        columns = _parse(layout)
        self.n = n = len(columns)
        scalar = [j for j, (kind, _, _) in enumerate(columns) if kind != "categorical"]
        categorical = [j for j, (kind, _, _) in enumerate(columns) if kind == "categorical"]
        self.blocks: list[tuple[int, int]] = []  # each categorical column's [start, stop) in the slot block
        slot_column, slot_local = [], []
        for j in categorical:
            start = len(slot_column)
            slot_column += [j] * columns[j][1]
            slot_local += list(range(columns[j][1]))
            self.blocks.append((start, len(slot_column)))
        self.n_scalar, self.n_slots = len(scalar), len(slot_column)
        #: width of the model space (and of the decoder's output)
        self.width = self.n_scalar + self.n_slots + n
        self.register_buffer("scalar_columns", torch.tensor(scalar, dtype=torch.long), persistent=False)
        self.register_buffer("is_binary", torch.tensor([columns[j][0] == "binary" for j in scalar], dtype=torch.bool), persistent=False)
        self.register_buffer("slot_columns", torch.tensor(slot_column, dtype=torch.long), persistent=False)
        self.register_buffer("slot_local", torch.tensor(slot_local, dtype=torch.float32), persistent=False)
        self.register_buffer("decoded_missing", torch.tensor([d for _, _, d in columns], dtype=torch.bool), persistent=False)
        # value terms come out as [scalars | categoricals]; this order puts them back in column order
        order = torch.argsort(torch.tensor(scalar + categorical, dtype=torch.long))
        self.register_buffer("column_order", order, persistent=False)
        #: the fixed missing logit of columns training never saw missing: log(1 / (n + 1)), set by ``set_rows``
        self.register_buffer("missing_prior", torch.zeros(n))

    def set_rows(self, rows: int) -> None:
        """The rule of succession for never-missing columns: p(missing) = 1 / (rows + 2)."""
        self.missing_prior.fill_(-math.log(rows + 1.0))

    # -- rows (batch, 2n) <-> model space (batch, width) -------------------------------------
    def preprocess(self, y: torch.Tensor, shift: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        """Encoded rows -> ŷ: scalars standardised (0 when missing), one-hot slots (zeros when
        missing), then the missing flags."""
        n = self.n
        values, flags = y[:, :n], y[:, n:]  # (batch, n) each
        observed = 1.0 - flags
        scalars = ((values - shift[:n]) * inv_scale[:n] * observed).index_select(1, self.scalar_columns)
        slots = values.index_select(1, self.slot_columns)  # (batch, n_slots): each slot's column's index
        one_hot = (slots == self.slot_local).to(y.dtype) * observed.index_select(1, self.slot_columns)
        return torch.cat([scalars, one_hot, flags], dim=1)

    def _parts(self, t: torch.Tensor):
        a, b = self.n_scalar, self.n_scalar + self.n_slots
        return t[:, :a], t[:, a:b], t[:, b:]

    def missing_logits(self, out: torch.Tensor) -> torch.Tensor:
        """l_j: decoded for columns training saw missing, the fixed prior for the others (batch, n)."""
        return torch.where(self.decoded_missing, self._parts(out)[2], self.missing_prior)

    def terms(self, y_hat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Each column's term of C (batch, n), summing to C (see the module docstring)."""
        target, one_hot, flags = self._parts(y_hat)
        scalar_out, logits, _ = self._parts(out)
        observed = 1.0 - flags
        diff = target - scalar_out
        scalar_terms = torch.where(self.is_binary, tf.softplus(scalar_out) - target * scalar_out, diff * diff)
        scalar_terms = scalar_terms * observed.index_select(1, self.scalar_columns)
        categorical = [torch.logsumexp(logits[:, a:b], dim=1) * one_hot[:, a:b].sum(dim=1)
                       - (one_hot[:, a:b] * logits[:, a:b]).sum(dim=1) for a, b in self.blocks]
        value_terms = torch.cat([scalar_terms, *(t.unsqueeze(1) for t in categorical)], dim=1)
        value_terms = value_terms.index_select(1, self.column_order)  # (batch, n), column order
        l = self.missing_logits(out)
        return value_terms + tf.softplus(l) - flags * l

    def gradient(self, out: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """∂C/∂out (batch, width), for explicit back-propagation (target propagation)."""
        target, one_hot, flags = self._parts(y_hat)
        scalar_out, logits, missing_out = self._parts(out)
        observed = (1.0 - flags).index_select(1, self.scalar_columns)
        scalar = torch.where(self.is_binary, torch.sigmoid(scalar_out) - target, 2.0 * (scalar_out - target)) * observed
        slots = [torch.softmax(logits[:, a:b], dim=1) * one_hot[:, a:b].sum(dim=1, keepdim=True) - one_hot[:, a:b]
                 for a, b in self.blocks]
        missing = (torch.sigmoid(missing_out) - flags) * self.decoded_missing.to(out.dtype)
        return torch.cat([scalar, *slots, missing], dim=1)

    def rows(self, out: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output -> (rows (batch, 2n): numbers in raw units, p(true), the most likely slot,
        then p(missing); slot probabilities (batch, n_slots), each column's softmax)."""
        scalar_out, logits, _ = self._parts(out)
        n = self.n
        scalar = torch.where(self.is_binary, torch.sigmoid(scalar_out),
                             scalar_out * scale[:n].index_select(0, self.scalar_columns)
                             + shift[:n].index_select(0, self.scalar_columns))
        probabilities = [torch.softmax(logits[:, a:b], dim=1) for a, b in self.blocks]
        best = [p.argmax(dim=1, keepdim=True).to(out.dtype) for p in probabilities]
        values = torch.cat([scalar, *best], dim=1).index_select(1, self.column_order)
        slot_p = torch.cat(probabilities, dim=1) if probabilities else out[:, :0]
        return torch.cat([values, torch.sigmoid(self.missing_logits(out))], dim=1), slot_p
