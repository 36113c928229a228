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
    with pytest.raises(Exception, match=f"missing inputs.*{cancer['names'][0]}"):  # the signature names it
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


def test_mlflow_models_serve_answers_with_the_runtime_scores(bundles, cancer, tmp_path, monkeypatch):
    """MLflow 3's defaults (a SQLite store in the working directory), `mlflow models serve` on the
    logged model (env-manager local), a dataframe_split request: the runtime's scores come back."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import aeserve
    import aeserve.mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        info = aeserve.mlflow.log_model(bundles["vae"])
    assert info.signature is not None and info.saved_input_example_info is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = [sys.executable, "-c", "import sys; from mlflow.cli import cli; sys.exit(cli())"]
    server = subprocess.Popen([*mlflow_cli, "models", "serve", "-m", info.model_uri, "--env-manager", "local",
                               "-p", str(port), "--host", "127.0.0.1"], env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        rows = cancer["anomalies"][:4].astype(np.float64)
        frame = pd.DataFrame(rows, columns=cancer["names"])
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                         {"Content-Type": "application/json"})
        deadline = time.monotonic() + 90
        while True:
            try:
                answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()[-2000:]
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=20)
    expected = aeserve.load(bundles["vae"]).score(rows.astype(np.float32))
    got = pd.DataFrame(answer["predictions"])
    np.testing.assert_allclose(got["energy"].to_numpy(), expected["energy"], rtol=1e-5)
    np.testing.assert_array_equal(got["anomaly"].to_numpy(), expected["anomaly"])
    np.testing.assert_allclose(got["p_value"].to_numpy(), expected["p_value"])
