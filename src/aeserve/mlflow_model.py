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

        from aeserve.errors import InputError

        if isinstance(model_input, pd.DataFrame):
            missing = [name for name in self.model.features if name not in model_input.columns]
            if missing:
                raise InputError(f"model_input lacks feature column(s) {', '.join(missing[:5])}"
                                 + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
            table = self.model.encoding is not None  # typed columns (text, booleans, missing cells)
            rows = model_input[self.model.features] if table else \
                model_input[self.model.features].to_numpy(dtype=np.float32)
        else:
            rows = np.asarray(model_input, dtype=np.float32)
        threshold = (params or {}).get("threshold")
        scores = self.model.score(rows, threshold=None if threshold is None else float(threshold))
        names = ("energy", *self.model.terms, *(["p_value"] if "p_value" in scores else []), "anomaly")
        index = model_input.index if isinstance(model_input, pd.DataFrame) else None
        return pd.DataFrame({name: scores[name] for name in names}, index=index)


set_model(AeserveModel())
