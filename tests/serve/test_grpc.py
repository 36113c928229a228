"""KServe v2 over gRPC with the stock tritonclient.grpc: every exposed model's results equal the
API's, errors carry the right status codes, and the compiled descriptor matches the .proto."""

from __future__ import annotations

import base64
import ssl
import threading

import numpy as np
import pytest

import aeserve

from conftest import Server, _free_port, self_signed_certificate

grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

FEATURES = 30


@pytest.fixture(scope="module")
def served(bundles):
    port = _free_port()
    server = Server(str(bundles["ae"]), str(bundles["vae"]), "--grpc-port", str(port), "--max-delay-ms", "1")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    yield server, client
    client.close()
    server.stop()


def _infer(client, model, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict:
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    wanted = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
    result = client.infer(model, tensors, outputs=wanted)
    names = [o.name for o in result.get_response().outputs]
    return {name: result.as_numpy(name) for name in names}


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_every_model_over_grpc_equals_the_api(served, bundles, cancer, kind):
    server, client = served
    model = aeserve.load(bundles[kind])
    rows = np.ascontiguousarray(np.concatenate([cancer["test_normal"][:20], cancer["anomalies"][:20]]), np.float32)

    scored = _infer(client, kind, {"y": rows})
    expected = model.score(rows)
    assert set(scored) == {"energy", *model.terms, "p_value", "anomaly"}
    np.testing.assert_array_equal(scored["p_value"], model.p_values(scored["energy"]))
    for name in ("energy", *model.terms):
        np.testing.assert_allclose(scored[name], expected[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scored["anomaly"], expected["anomaly"])

    encoded = _infer(client, f"{kind}-encode", {"y": rows})
    for name, array in model.encode_all(rows).items():
        np.testing.assert_allclose(encoded[name], array, rtol=1e-5, atol=1e-6)
    codes = encoded[model.encoder_outputs[0]]
    decoded = _infer(client, f"{kind}-decode", {"z": codes})
    np.testing.assert_allclose(decoded["y_tilde"], model.decode(codes), rtol=1e-5, atol=1e-5)

    sampled = _infer(client, f"{kind}-sample", {"n": np.array([7], np.int64), "seed": np.array([3], np.int64)})
    np.testing.assert_allclose(sampled["y"], model.sample(7, 3), rtol=1e-5, atol=1e-5)

    explained = _infer(client, kind, {"y": rows}, ["energy", "contributions"])
    np.testing.assert_allclose(explained["contributions"], model.explain(rows)["contributions"], rtol=1e-5, atol=1e-6)


def test_metadata_and_health(served):
    _, client = served
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("ae")
    metadata = client.get_model_metadata("ae-encode")
    assert [t.name for t in metadata.inputs] == ["y"] and list(metadata.inputs[0].shape) == [-1, FEATURES]
    assert client.get_server_metadata().name == "aeserve"


def test_errors_carry_status_codes_and_say_what(served):
    server, client = served
    with pytest.raises(InferenceServerException) as caught:
        _infer(client, "nope", {"y": np.zeros((1, FEATURES), np.float32)})
    assert caught.value.status() == "StatusCode.NOT_FOUND" and "served: ae" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        _infer(client, "ae", {"y": np.zeros((2, 7), np.float32)})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "expected [-1, 30]" in caught.value.message()
    bad = np.zeros((2, FEATURES), np.float32)
    bad[1, 4] = np.nan
    with pytest.raises(InferenceServerException) as caught:
        _infer(client, "ae", {"y": bad})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "row 2 holds NaN" in caught.value.message()
    assert client.is_server_ready()  # still serving
    assert "Traceback" not in server.log()


def test_a_full_queue_is_resource_exhausted(bundles):
    port = _free_port()
    server = Server(str(bundles["ae"]), "--grpc-port", str(port), "--max-queue-rows", "64",
                    "--max-delay-ms", "300", "--max-batch", "4096")
    codes: list[str] = []
    rows = np.zeros((60, FEATURES), np.float32) + 1

    def send():
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            _infer(client, "ae", {"y": rows})
            codes.append("OK")
        except InferenceServerException as exc:
            codes.append(exc.status())
        finally:
            client.close()

    try:
        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.stop()
    assert "OK" in codes and "StatusCode.RESOURCE_EXHAUSTED" in codes, codes


def test_the_bearer_token_guards_grpc_too(bundles, tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    port = _free_port()
    server = Server(str(bundles["ae"]), "--grpc-port", str(port), "--token-file", str(tmp_path / "token"))
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        assert client.is_server_live()  # probes stay open
        rows = {"y": np.zeros((1, FEATURES), np.float32) + 1}
        with pytest.raises(InferenceServerException) as caught:
            _infer(client, "ae", rows)
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        tensor = grpcclient.InferInput("y", [1, FEATURES], "FP32")
        tensor.set_data_from_numpy(rows["y"])
        result = client.infer("ae", [tensor], headers={"authorization": "Bearer s3cret"})
        assert result.as_numpy("energy").shape == (1,)
    finally:
        client.close()
        server.stop()


def test_the_committed_descriptor_is_the_proto_compiled():
    pytest.importorskip("grpc_tools")
    from aeserve.serve.grpc_descriptor import SERIALIZED, compile_proto

    assert base64.b64decode(SERIALIZED) == compile_proto(), \
        "regenerate: python -m aeserve.serve.grpc_descriptor --write"


def test_grpc_takes_the_servers_tls_certificate(bundles, cancer, tmp_path):
    pytest.importorskip("cryptography")
    cert, key = self_signed_certificate(tmp_path)
    port = _free_port()
    context = ssl.create_default_context(cafile=str(cert))
    server = Server(str(bundles["ae"]), "--grpc-port", str(port), "--ssl-certfile", str(cert),
                    "--ssl-keyfile", str(key), scheme="https", context=context)
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}", ssl=True, root_certificates=str(cert))
        rows = np.ascontiguousarray(cancer["anomalies"][:3], np.float32)
        np.testing.assert_allclose(_infer(client, "ae", {"y": rows})["energy"],
                                   aeserve.load(bundles["ae"]).score(rows)["energy"], rtol=1e-5)
        client.close()
        plain = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")  # no TLS: no answer
        with pytest.raises(InferenceServerException):
            plain.is_server_live(client_timeout=3)
        plain.close()
    finally:
        server.stop()
