"""The MLflow pyfunc model of an aeserve bundle, logged as code ("models from code"), so MLflow
stores this file and the bundle directory, never a pickled object.

``load_context`` opens the bundle MLflow keeps as the ``bundle`` artifact with the torch-free
runtime (``aeserve.load``, backend ``auto``); ``predict`` scores a pandas DataFrame (the
bundle's feature columns, by name; other columns are ignored) or a numpy array of rows and
returns a DataFrame on the input's index: energy, its terms, p_value (the conformal p-value,
when the bundle keeps held-out energies) and anomaly (1 above the bundle's threshold).
"""

from __future__ import annotations

import mlflow.pyfunc
from mlflow.models import set_model

__all__ = ["AeserveModel"]


class AeserveModel(mlflow.pyfunc.PythonModel):
    """An aeserve bundle behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        """Open the bundle artifact."""
        import aeserve

        self.model = aeserve.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        """Score rows: a DataFrame (columns by feature name) or an array (rows, features)."""
        import numpy as np
        import pandas as pd

        if not isinstance(model_input, pd.DataFrame):
            model_input = np.asarray(model_input, dtype=np.float32)  # rows (n, features)
        threshold = (params or {}).get("threshold")
        # a DataFrame's columns are taken by name (others ignored, a missing one named) and the
        # scores come back on its index
        scores = self.model.score(model_input, threshold=None if threshold is None else float(threshold))
        return scores if isinstance(scores, pd.DataFrame) else pd.DataFrame(scores)


set_model(AeserveModel())
