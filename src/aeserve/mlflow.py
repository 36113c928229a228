"""Log an aeserve bundle as an MLflow pyfunc model (extra ``mlflow``).

    import aeserve.mlflow
    with mlflow.start_run():
        info = aeserve.mlflow.log_model("models/cancer-vae")
    model = mlflow.pyfunc.load_model(info.model_uri)
    scores = model.predict(frame)        # energy, its terms, anomaly

The bundle directory is stored as an artifact, verified (every file's sha256) before it is
logged, and opened at load time with the torch-free runtime; the model itself is this
package's ``mlflow_model.py``, logged as code, so nothing is pickled.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["log_model"]


def log_model(bundle_dir: str | os.PathLike, name: str = "model", *, registered_model_name: str | None = None,
              pip_requirements: list[str] | None = None, **kwargs):
    """Log the bundle at ``bundle_dir`` to the active MLflow run as a pyfunc model named
    ``name``; returns MLflow's ModelInfo (``info.model_uri`` loads it). Other keyword
    arguments go to ``mlflow.pyfunc.log_model``."""
    try:
        import mlflow.pyfunc
    except ImportError:
        from aeserve.errors import BackendUnavailable

        raise BackendUnavailable("logging to MLflow needs mlflow: pip install 'aeserve[mlflow]'") from None
    import aeserve
    from aeserve.bundle import Bundle

    Bundle.open(bundle_dir)  # verified before it is copied anywhere
    # no signature: MLflow would then refuse either arrays (a column signature) or named
    # columns beyond the features (a tensor one); predict checks its input itself
    return mlflow.pyfunc.log_model(
        name=name, python_model=str(Path(__file__).with_name("mlflow_model.py")),
        artifacts={"bundle": str(Path(bundle_dir))}, registered_model_name=registered_model_name,
        pip_requirements=pip_requirements or [f"aeserve[cpu]=={aeserve.__version__}"], **kwargs)
