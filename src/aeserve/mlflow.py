"""Log an aeserve bundle as an MLflow pyfunc model (extra ``mlflow``).

    import aeserve.mlflow
    with mlflow.start_run():
        info = aeserve.mlflow.log_model("models/cancer-vae")
    model = mlflow.pyfunc.load_model(info.model_uri)
    scores = model.predict(frame)        # energy, its terms, p_value, anomaly, on frame's index

The bundle directory is stored as an artifact, verified (every file's sha256) before it is
logged, and opened at load time with the torch-free runtime; the model itself is this
package's ``mlflow_model.py``, logged as code, so nothing is pickled. The logged model carries
an input example (rows the bundle kept at validation) and a signature of the bundle's columns,
so ``mlflow models serve`` checks requests and answers them.
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

    bundle = Bundle.open(bundle_dir)  # verified before it is copied anywhere
    if "signature" not in kwargs or "input_example" not in kwargs:
        example = input_example(bundle)
        kwargs.setdefault("input_example", example)
        if "signature" not in kwargs:
            kwargs["signature"] = signature_of(bundle, example)
    return mlflow.pyfunc.log_model(
        name=name, python_model=str(Path(__file__).with_name("mlflow_model.py")),
        artifacts={"bundle": str(Path(bundle_dir))}, registered_model_name=registered_model_name,
        pip_requirements=pip_requirements or [f"aeserve[cpu]=={aeserve.__version__}"], **kwargs)


def input_example(bundle, rows: int = 5):
    """A DataFrame of ``rows`` rows the bundle kept at validation (or typical rows when it kept
    none), one column per input column by name: a mixed table's as numbers, booleans and
    category names, its missing cells None."""
    import numpy as np
    import pandas as pd

    from aeserve.columns import TableEncoding

    kept = bundle.kept_rows()
    values = kept[1][:rows] if kept is not None and len(kept[1]) else bundle.manifest.typical_rows(rows)
    encoding = TableEncoding.of(bundle.manifest.input)
    if encoding is None:  # float64 columns: MLflow then takes float32 and float64 frames alike
        return pd.DataFrame(values.astype(np.float64), columns=bundle.features)
    frame = pd.DataFrame({name: column.astype(np.float64) if column.dtype.kind == "f" else column
                          for name, column in encoding.decode(values).items()})
    for j, spec in enumerate(encoding.columns):  # the flags follow the values: column j's is j + count
        missing = values[:, len(encoding.columns) + j] > 0.5
        if missing.any():
            frame[spec.name] = frame[spec.name].astype(object).where(~missing, None)
            if spec.type == "numeric":
                frame[spec.name] = pd.to_numeric(frame[spec.name]).astype(np.float64)
    return frame


def signature_of(bundle, example):
    """MLflow's signature: the bundle's columns by name (a missing cell allowed where training saw
    one; other columns of a DataFrame are ignored by MLflow) and the score columns."""
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    from aeserve.serve.backends import create_backend
    from aeserve.serve.model import Model

    inferred = infer_signature(example)
    columns = {c.name: c for c in bundle.manifest.input.columns}  # schema 3: one record per input column
    inputs = Schema([ColSpec(spec.type, spec.name, required=not columns[spec.name].may_be_missing)
                     for spec in inferred.inputs.inputs])
    model = Model(bundle, create_backend("onnxruntime", bundle))
    try:
        scores = model.score(example)
    finally:
        model.close()
    outputs = infer_signature(example, scores).outputs
    return type(inferred)(inputs=inputs, outputs=outputs)
