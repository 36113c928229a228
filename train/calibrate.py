"""After fitting: the anomaly threshold and the latent sampler stored in the manifest."""

from __future__ import annotations

import numpy as np
import torch

from aeserve import thresholds
from aeserve.errors import InputError
from aeserve.manifest import LatentSampler, Threshold
from aeserve.train.network import EnergyAutoencoder

__all__ = ["quantile_threshold", "latent_sampler"]


def quantile_threshold(val_energies: np.ndarray, quantile: float) -> Threshold:
    """Threshold = the ``quantile`` of validation energies, with how it was obtained."""
    if not 0.0 < quantile < 1.0:
        raise InputError(f"quantile must be in (0, 1), got {quantile}")
    value = thresholds.quantile_threshold(val_energies, 1.0 - quantile).value
    return Threshold(value=value, method="quantile", provenance={
        "quantile": quantile, "on": "validation", "rows": int(val_energies.shape[0]),
        "expected_false_positive_rate": round(1.0 - quantile, 6)})


@torch.no_grad()
def latent_sampler(model: EnergyAutoencoder, train: torch.Tensor) -> LatentSampler:
    """How ``sample`` draws codes: the kind's N(0, I) prior (VAE), else a Gaussian fitted to codes.

    For ae/dae/cae the training codes' mean m and covariance Σ = L Lᵀ are stored, and a
    sample is z = m + L ε with ε ~ N(0, I).
    """
    latent = model.config.latent
    if model.has_prior:
        return LatentSampler(size=latent, sampler="prior", mean=(0.0,) * latent,
                             cholesky=tuple(map(tuple, np.eye(latent).tolist())))
    codes = model.code(train).double().numpy()  # (rows, latent)
    mean = codes.mean(axis=0)
    cov = np.atleast_2d(np.cov(codes, rowvar=False)) + 1e-6 * np.eye(latent)
    return LatentSampler(size=latent, sampler="gaussian fitted to training codes", mean=tuple(mean.tolist()),
                         cholesky=tuple(map(tuple, np.linalg.cholesky(cov).tolist())))
