"""An aeserve bundle as an MLflow pyfunc model: logged to a local file store, loaded back with
``mlflow.pyfunc.load_model``, its predictions equal ``aeserve.load().score``; nothing pickled."""

from __future__ import annotations

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
pd = pytest.importorskip("pandas")


def test_log_load_predict_equals_the_runtime(bundles, cancer, tmp_path, monkeypatch):
    import aeserve.mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store the issue asks for, in maintenance mode in MLflow 3
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    with mlflow.start_run():
        info = aeserve.mlflow.log_model(bundles["vae"])
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    rows = np.concatenate([cancer["test_normal"][:10], cancer["anomalies"][:10]]).astype(np.float32)
    expected = aeserve.load(bundles["vae"]).score(rows)
    frame = pd.DataFrame(rows, columns=cancer["names"]).assign(label=1)  # extra columns are ignored
    for model_input in (frame, frame.astype("float32")):  # the signature takes the bundle's columns
        result = loaded.predict(model_input)
        assert list(result.columns) == ["energy", *aeserve.load(bundles["vae"]).terms, "p_value", "anomaly"]
        np.testing.assert_array_equal(result["p_value"].to_numpy(), expected["p_value"])
        np.testing.assert_allclose(result["energy"].to_numpy(), expected["energy"], rtol=1e-5)
        np.testing.assert_array_equal(result["anomaly"].to_numpy(), expected["anomaly"])
    stored = list((tmp_path / "mlruns").rglob("*"))
    assert not [p for p in stored if p.suffix in (".pkl", ".pickle") or p.name == "python_model.pkl"]
    assert any(p.name == "manifest.json" for p in stored)
    with pytest.raises(Exception, match="lacks 1 column"):
        loaded.predict(frame.drop(columns=[cancer["names"][0]]))


def test_a_mixed_table_bundle_predicts_from_a_dataframe_of_mixed_dtypes(mixed_bundle, tmp_path, monkeypatch):
    import aeserve
    import aeserve.mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    with mlflow.start_run():
        info = aeserve.mlflow.log_model(mixed_bundle["path"])
    frame = mixed_bundle["anomalies"].head(20)  # text, a boolean, NaN for missing incomes
    result = mlflow.pyfunc.load_model(info.model_uri).predict(frame.assign(label=1))
    expected = aeserve.load(mixed_bundle["path"]).score(frame)
    np.testing.assert_allclose(result["energy"].to_numpy(), expected["energy"], rtol=1e-5)
