"""Shared fixtures: real data (scikit-learn's offline sets) and bundles trained once per session."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# measured backend choices (serve/backends/measured.py) go to a cache of this test run, which
# the CLI subprocesses share, never to the user's ~/.cache
os.environ.setdefault("AESERVE_CACHE_DIR", tempfile.mkdtemp(prefix="aeserve-test-cache-"))

# A run started in the background of a non-interactive shell inherits SIGINT ignored, and every
# aeserve it starts would too (Ctrl-C tests would see the command run on): a handler of our own
# here becomes the default disposition in the children (exec resets handlers, not SIG_IGN).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

KINDS = ("ae", "dae", "cae", "vae", "lvm")


@pytest.fixture(scope="session")
def cancer():
    """Breast-cancer rows: benign = normal (train / held-out test), malignant = anomalies."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    values = data.data.astype(np.float32)
    names = [n.replace(" ", "_") for n in data.feature_names]
    normal = values[data.target == 1]
    order = np.random.default_rng(0).permutation(len(normal))
    return {"names": names, "train": normal[order[100:]], "test_normal": normal[order[:100]],
            "anomalies": values[data.target == 0]}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, cancer):
    """One exported bundle per kind, trained on benign breast-cancer rows."""
    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    root = tmp_path_factory.mktemp("bundles")
    table = Table(cancer["train"], cancer["names"], "cancer.csv")
    paths = {}
    for kind in KINDS:
        config = ModelConfig(kind=kind, n_features=30, hidden=(32, 16), latent=4)
        train_bundle(table, root / kind, config, FitConfig(epochs=150, seed=0))
        paths[kind] = root / kind
    return paths


def mixed_rows(n: int, seed: int, anomalies: bool = False):
    """A generated table of the kind real tables are: numbers, text (with commas), a boolean and
    missing cells, whose columns depend on each other. ``anomalies``: rows that break the
    dependencies (a home unlike the age, an unseen job, a member flag against the income,
    an income missing where it never is)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 70, n).round()
    home = np.where(age < 35, "rent", np.where(age < 55, "mortgage, fixed", "owner"))
    income = np.exp(rng.normal(3.5, 0.3, n) + (age - 45) / 60).round(1)
    member = income > np.median(income)
    job = rng.choice(["fixed", "freelance", "partime"], n, p=[0.6, 0.3, 0.1])
    income_missing = (job == "freelance") & (rng.random(n) < 0.3)  # freelancers often leave income out
    if anomalies:
        kind = np.arange(n) % 4
        home = np.where(kind == 0, np.where(age < 45, "owner", "rent"), home)
        job = np.where(kind == 1, "astronaut", job)
        member = np.where(kind == 2, ~member, member)
        income = np.where(kind == 2, income * 3, income)
        income_missing = np.where(kind == 3, True, income_missing) & (job != "freelance") | (kind == 3)
        job = np.where(kind == 3, "fixed", job)
    frame = pd.DataFrame({"age": age, "home": home, "income": np.where(income_missing, np.nan, income),
                          "member": member, "job": job})
    frame["income"] = frame["income"].astype("float64")
    return frame


@pytest.fixture(scope="session")
def mixed_bundle(tmp_path_factory):
    """An ae bundle trained through the CLI on a generated mixed table (CSV), with its data."""
    root = tmp_path_factory.mktemp("mixed")
    train, normal, odd = mixed_rows(3000, 0), mixed_rows(300, 1), mixed_rows(300, 2, anomalies=True)
    for name, frame in (("train", train), ("normal", normal), ("anomalies", odd)):
        frame.to_csv(root / f"{name}.csv", index=False)
    result = run_cli("train", root / "train.csv", "--out", root / "ae", "--epochs", "60", "--hidden", "32",
                     "--latent", "4", "--quiet")
    assert result.returncode == 0, result.stderr
    return {"path": root / "ae", "root": root, "normal": normal, "anomalies": odd}


def sensor_rows(n: int, seed: int, machines=("m1", "m2"), anomalies: bool = False):
    """Generated sensor series, the kind a plant logs: per machine a row a minute (timestamps), a
    vibration that cycles every 40 rows, a temperature that follows it a few rows late, and a
    load; rows of the machines interleaved in time order. ``anomalies``: machine m1 gets a spike,
    a level shift, a stretch at another frequency and a flat line, each 12 rows, marked in
    ``label`` (1) — values each plausible alone, unusual only against the rows before them."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = []
    for number, machine in enumerate(machines):
        t = np.arange(n)
        phase = 2 * np.pi * (t / 40.0 + number / 7.0)
        vibration = np.sin(phase) + 0.05 * rng.standard_normal(n)
        temperature = 0.8 * np.sin(phase - 0.6) + 0.05 * rng.standard_normal(n)
        load = 0.5 * np.cos(2 * phase) + 0.05 * rng.standard_normal(n)
        label = np.zeros(n, np.int8)
        if anomalies and machine == "m1":
            for kind, start in enumerate(range(n // 5, n, n // 5)[:4]):
                span = slice(start, start + 12)
                label[span] = 1
                if kind == 0:
                    vibration[span] += 1.5 * np.sign(vibration[span])   # spikes
                elif kind == 1:
                    temperature[span] += 0.9                              # a level shift
                elif kind == 2:
                    vibration[span] = np.sin(2.5 * phase[span])           # another frequency
                else:
                    load[span] = load[start]                              # a flat line
        frames.append(pd.DataFrame({"time": pd.Timestamp("2024-03-01") + pd.to_timedelta(t, unit="min"),
                                    "machine": machine, "vibration": vibration, "temperature": temperature,
                                    "load": load, "label": label}))
    return pd.concat(frames).sort_values("time", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="session")
def series_bundle(tmp_path_factory):
    """An ae bundle trained through the CLI on generated sensor series (windows of 16 rows, per
    machine, by time, a gap over 5 minutes a new series), with its normal and labelled test data."""
    root = tmp_path_factory.mktemp("series")
    sensor_rows(2000, 0).drop(columns="label").to_csv(root / "train.csv", index=False)
    test = sensor_rows(1000, 1, anomalies=True)
    test.to_csv(root / "test.csv", index=False)
    result = run_cli("train", root / "train.csv", "--window", "16", "--time-column", "time", "--group-column",
                     "machine", "--max-gap", "5min", "--out", root / "ae", "--epochs", "40", "--hidden", "64",
                     "--latent", "6", "--quiet")
    assert result.returncode == 0, result.stderr
    return {"path": root / "ae", "root": root, "test": test}


@pytest.fixture(scope="session")
def conv_bundles(tmp_path_factory):
    """Every kind as stride-2 convolutions on 8x8 digits (few epochs: parity needs weights, not quality),
    exported (with the export's parity check); and every digit's rows in [0, 1]."""
    from sklearn.datasets import load_digits

    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    digits = load_digits()
    rows = (digits.data[digits.target == 0] / 16.0).astype(np.float32)
    root = tmp_path_factory.mktemp("conv")
    table = Table(rows, [f"px{i}" for i in range(64)], "digits.npy")
    for kind in KINDS:
        config = ModelConfig(kind=kind, n_features=64, arch="conv", image_shape=(1, 8, 8), channels=(4, 8),
                             hidden=(16,), latent=3)
        train_bundle(table, root / kind, config, FitConfig(epochs=3, seed=0))
    return {kind: root / kind for kind in KINDS}, (digits.data / 16.0).astype(np.float32)


@pytest.fixture(scope="session")
def quantised(bundles, tmp_path_factory):
    """A copy of the ae bundle after ``aeserve export --quantize int8`` (dynamic int8, and static
    int8 where nncf is installed), with the command's result: made once for every int8 test."""
    import shutil

    path = tmp_path_factory.mktemp("int8") / "ae"
    shutil.copytree(bundles["ae"], path)
    result = run_cli("export", path, "--quantize", "int8")
    assert result.returncode == 0, result.stderr
    return path, result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``aeserve serve`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str, scheme: str = "http", context=None):
        self.port = _free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.base = f"{scheme}://{self.url}"
        # stderr to a file, not a pipe: a server logging much would block on a full pipe
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([sys.executable, "-m", "aeserve", "serve", *args, "--port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=self._log, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and self.process.poll() is None:
            try:
                if urllib.request.urlopen(f"{self.base}/v2/health/ready", timeout=1, context=context).status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log()}")

    def log(self) -> str:
        """What the server wrote on stderr so far."""
        self._log.seek(0)
        return self._log.read()

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(f"{self.base}{path}", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.process.kill()


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``aeserve ARGS`` as a user would, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "aeserve", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def int8_accepted(result: subprocess.CompletedProcess, what: str) -> bool:
    """Whether ``aeserve export --quantize int8`` kept ``what`` ('onnxruntime dynamic int8',
    'OpenVINO static int8') on this CPU; a refusal must name the CPU and say fp32 stays."""
    if f"quantised {what}" in result.stderr:
        return True
    assert f"refused {what}" in result.stderr, result.stderr
    from aeserve.machine import cpu_model

    assert cpu_model() in result.stderr and "keep --precision fp32" in result.stderr, result.stderr
    return False


def load_reduced(path, **options):
    """``aeserve.load`` at a reduced precision, as it goes on this CPU: the model, or (after checking
    that the refusal names this CPU and says fp32 works) a skip saying why it was refused here."""
    import aeserve
    from aeserve.errors import BackendUnavailable
    from aeserve.machine import cpu_model

    try:
        return aeserve.load(path, **options)
    except BackendUnavailable as exc:
        if "refused on" not in str(exc):
            raise
        assert cpu_model() in str(exc) and "--precision fp32 runs this bundle exactly here" in str(exc), exc
        pytest.skip(f"refused on this CPU, as it should be when it strays: {exc}")


def self_signed_certificate(directory) -> tuple:
    """(cert.pem, key.pem) in ``directory``: a self-signed certificate for 127.0.0.1 (TLS tests)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def write_shards(folder, rows: np.ndarray, names, parts: int, suffix: str = ".parquet") -> list:
    """``rows`` cut into ``parts`` shard files of ``suffix``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(rows, parts)):
        path = folder / f"part-{i:02d}{suffix}"
        if suffix == ".parquet":
            pq.write_table(pa.table({n: part[:, j] for j, n in enumerate(names)}), path, row_group_size=50)
        elif suffix == ".csv":
            import pyarrow.csv as pacsv
            pacsv.write_csv(pa.table({n: part[:, j] for j, n in enumerate(names)}), path)
        else:
            np.save(path, part)
        paths.append(path)
    return paths


def cancer_auroc(path, cancer) -> float:
    """AUROC of a bundle's energies: held-out benign rows against malignant ones."""
    from sklearn.metrics import roc_auc_score

    import aeserve

    model = aeserve.load(path)
    energies = np.concatenate([model.score(cancer["test_normal"])["energy"], model.score(cancer["anomalies"])["energy"]])
    return roc_auc_score(np.r_[np.zeros(100), np.ones(len(cancer["anomalies"]))], energies)
