"""The seed's energy terms, written once and used by training, export and the torch backend.

Notation follows the seed (Canziani, *Modèles génératifs / Auto-encodeurs*): for an
observation y, code h = Enc(y), reconstruction ỹ = Dec(h), the energy is

    F(y) = C(y, ỹ) + R(h)                                     (seed: "l'énergie est la somme")

with C either the squared error ‖y − ỹ‖² or the binary cross-entropy
−Σᵢ yᵢ log ỹᵢ + (1 − yᵢ) log(1 − ỹᵢ), and the loss functional the batch mean
L(F, Y) = 1/m Σⱼ F(y⁽ʲ⁾) (seed: "fonctionnelle de perte"). All functions return one value
per row: (batch,).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as tf

__all__ = [
    "COSTS",
    "reconstruction_cost",
    "reconstruction_terms",
    "decoder_output",
    "l1_penalty",
    "kl_to_standard_normal",
    "contractive_penalty",
    "conv_adjoint",
    "activation_derivative",
    "loss_functional",
]

COSTS = ("mse", "bce")


def reconstruction_terms(y: torch.Tensor, out: torch.Tensor, cost: str) -> torch.Tensor:
    """Each feature's term of C(y, ỹ): C = Σᵢ cᵢ, so cᵢ is feature i's exact share of the cost.
    ``out`` is ỹ for ``mse`` and the decoder's logits l for ``bce``.

    mse: cᵢ = (yᵢ − ỹᵢ)².
    bce: cᵢ = −yᵢ log σ(lᵢ) − (1 − yᵢ) log(1 − σ(lᵢ)) = softplus(lᵢ) − yᵢ lᵢ, computed stably
    from the logits.
    """
    # y, out: (batch, features) -> (batch, features)
    if cost == "mse":
        diff = y - out  # squared by a Mul: ONNX Runtime's Pow took twice as long
        return diff * diff
    if cost == "bce":
        return tf.softplus(out) - y * out
    raise ValueError(f"unknown cost {cost!r}; expected one of {COSTS}")


def reconstruction_cost(y: torch.Tensor, out: torch.Tensor, cost: str) -> torch.Tensor:
    """C(y, ỹ) per row (batch,): ‖y − ỹ‖² for mse (a sum over features, not a mean), the binary
    cross-entropy −Σᵢ yᵢ log ỹᵢ + (1 − yᵢ) log(1 − ỹᵢ) for bce (seed: the two costs C)."""
    return reconstruction_terms(y, out, cost).sum(dim=1)


def decoder_output(out: torch.Tensor, cost: str) -> torch.Tensor:
    """ỹ from the decoder's last layer: identity for mse, σ(logits) for bce."""
    return torch.sigmoid(out) if cost == "bce" else out


def l1_penalty(h: torch.Tensor) -> torch.Tensor:
    """‖h‖₁ per row, the sparse-code regulariser R(h) before its weight."""
    return h.abs().sum(dim=1)  # (batch,)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """D_KL(N(μ, v) ‖ N(0, 1)) = ½ Σᵢ vᵢ − log vᵢ − 1 + μᵢ², with v = exp(logvar) (seed, VAE)."""
    return 0.5 * (logvar.exp() - logvar - 1.0 + mu.pow(2)).sum(dim=1)  # (batch,)


def activation_derivative(name: str, pre: torch.Tensor) -> torch.Tensor:
    """f'(a) for the element-wise activation ``name`` at pre-activation ``a``."""
    if name == "relu":
        return (pre > 0).to(pre.dtype)
    if name == "tanh":
        return 1.0 - torch.tanh(pre).pow(2)
    if name == "sigmoid":
        s = torch.sigmoid(pre)
        return s * (1.0 - s)
    raise ValueError(f"unknown activation {name!r}")


def conv_adjoint(rows: torch.Tensor, conv: nn.Module, transposed: bool) -> torch.Tensor:
    """The adjoint of a stride-2 convolution layer applied to ``rows``: the transposed convolution
    with the same weights (``transposed=False``: ``conv`` is an encoder's Conv2d), or the
    convolution (``conv`` is a decoder's ConvTranspose2d)."""
    if transposed:
        return torch.nn.functional.conv2d(rows, conv.weight, stride=conv.stride, padding=conv.padding)
    return torch.nn.functional.conv_transpose2d(rows, conv.weight, stride=conv.stride, padding=conv.padding,
                                                output_padding=tuple(s - 1 for s in conv.stride))


def contractive_penalty(layers: Sequence[nn.Linear], activation: str,
                        pre_activations: Sequence[torch.Tensor], *, convs: Sequence[nn.Conv2d] = (),
                        conv_pres: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """‖∂h/∂y‖²_F per row, exactly, for the encoder h = W_k f(… f(W₁ x + b₁) …) + b_k, where
    x = y, or the flattened output of stride-2 convolutions x = f(conv(… f(conv(y)))).

    The Jacobian is J = W_k D_{k−1} W_{k−1} … D₁ W₁ [· D_conv Conv …] with D = diag(f'(a));
    it is built from the code side, so the running product is (batch, latent, width) and
    never (batch, width, width). Through a convolution, each of the ``latent`` rows of J is
    carried back as an image by the convolution's adjoint, the transposed convolution.
    """
    jac = layers[-1].weight.unsqueeze(0)  # (1, latent, width_{k-1})
    for layer, pre in zip(reversed(layers[:-1]), reversed(pre_activations)):
        jac = jac * activation_derivative(activation, pre).unsqueeze(1)  # (batch, latent, width)
        jac = torch.matmul(jac, layer.weight)  # (batch, latent, width_{i-1})
    if convs:
        last = conv_pres[-1]  # (batch, c, h, w)
        batch, latent = last.shape[0], jac.shape[1]
        rows = jac.expand(batch, latent, -1).reshape(batch * latent, *last.shape[1:])
        for conv, pre in zip(reversed(convs), reversed(conv_pres)):
            slope = activation_derivative(activation, pre).unsqueeze(1).expand(-1, latent, *pre.shape[1:])
            rows = rows * slope.reshape(batch * latent, *pre.shape[1:])
            rows = conv_adjoint(rows, conv, transposed=False)
        jac = rows.reshape(batch, latent, -1)  # (batch, latent, C*H*W)
    return jac.pow(2).sum(dim=(1, 2))  # (batch,); (1,) when there is no hidden layer


def loss_functional(energy: torch.Tensor) -> torch.Tensor:
    """L(F, Y) = 1/m Σⱼ F(y⁽ʲ⁾): the mean per-row energy over the batch (seed)."""
    return energy.mean()


def cost_gradient(out: torch.Tensor, y: torch.Tensor, cost: str) -> torch.Tensor:
    """∂C/∂out for C = ‖y − out‖² (2(out − y)) or the bce of logits out (σ(out) − y)."""
    return 2.0 * (out - y) if cost == "mse" else torch.sigmoid(out) - y


def softmin(energies: torch.Tensor, beta: float) -> torch.Tensor:
    """softmin_β over the last axis: −1/β · log Σ exp(−β E) (seed: F_β; F_∞ = min as β → ∞)."""
    return -torch.logsumexp(-beta * energies, dim=-1) / beta
