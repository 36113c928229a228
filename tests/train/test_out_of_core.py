"""Training out of core: shards, the stable split, streaming statistics, the shuffle buffer, the
streamed fit, checkpoints and resume, devices and precisions (on this CPU)."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aeserve.errors import InputError, Interrupted, OptionError
from aeserve.train.checkpoint import load_checkpoint
from aeserve.train.config import ModelConfig
from aeserve.train.device import Hardware, resolve_device
from aeserve.train.fit import Checkpointing, FitConfig, fit
from aeserve.train.registry import build_model
from aeserve.train.shards import (
    BottomK,
    RunningMoments,
    Shards,
    ShuffleBuffer,
    epoch_batches,
    file_key,
    row_hash,
    scan,
)
from aeserve.train.streaming import ShardRows, StreamOptions, train_shards

from conftest import cancer_auroc, write_shards


@pytest.fixture(scope="module")
def cancer_shards(tmp_path_factory, cancer):
    folder = tmp_path_factory.mktemp("shards") / "cancer"
    write_shards(folder, cancer["train"], cancer["names"], 3)
    return Shards.find([folder])


def test_row_hash_is_stable_uniform_and_independent_of_chunking():
    rows = np.arange(1, 200_001)
    whole = row_hash(file_key("a.parquet"), rows)
    pieces = np.concatenate([row_hash(file_key("a.parquet"), part) for part in np.array_split(rows, 7)])
    assert np.array_equal(whole, pieces)
    assert whole.min() >= 0 and whole.max() < 1
    assert abs((whole < 0.1).mean() - 0.1) < 0.003  # 200k draws: std of the share 0.00067
    other = row_hash(file_key("b.parquet"), rows)
    assert abs(np.corrcoef(whole, other)[0, 1]) < 0.01  # another file, another split
    assert file_key("/x/y/a.parquet") == file_key("a.parquet")  # moving the folder keeps the split


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 499), max_size=8, unique=True), scale=st.sampled_from([1e-3, 1.0, 1e4]))
def test_running_moments_match_numpy_whatever_the_chunks(cuts, scale):
    rows = (np.random.default_rng(len(cuts)).normal(5.0, 2.0, size=(500, 3)) * scale).astype(np.float32)
    merged = RunningMoments()
    for part in np.split(rows, sorted(cuts)):
        piece = RunningMoments()
        piece.update(part)
        merged.merge(piece)
    exact = rows.astype(np.float64)
    assert merged.count == 500
    np.testing.assert_allclose(merged.mean, exact.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, exact.std(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(merged.low, rows.min(axis=0))
    np.testing.assert_array_equal(merged.high, rows.max(axis=0))


def test_bottom_k_keeps_the_same_rows_whatever_the_order():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(1000, 2)).astype(np.float32)
    hashes = rng.random(1000)
    a, b = BottomK(50), BottomK(50)
    for part in np.array_split(np.arange(1000), 9):
        a.offer(rows[part], hashes[part])
    for part in np.array_split(rng.permutation(1000), 4):
        b.offer(rows[part], hashes[part])
    assert np.array_equal(a.values(2), b.values(2))
    assert np.array_equal(a.values(2), rows[np.argsort(hashes)[:50]])


def test_shuffle_buffer_gives_every_row_once_and_mixes_chunks():
    buffer = ShuffleBuffer(capacity=300, batch_size=32, rng=np.random.default_rng(0))
    out = []
    for start in range(0, 1000, 100):  # 10 chunks of consecutive ids
        out.extend(buffer.add(np.arange(start, start + 100, dtype=np.float32)[:, None]))
    out.extend(buffer.drain())
    ids = np.concatenate(out).ravel()
    assert sorted(ids.tolist()) == list(range(1000))
    assert all(len(b) == 32 for b in out[:-1])
    first_chunks = {int(i) // 100 for i in out[0].ravel()}
    assert len(first_chunks) >= 2  # a batch mixes rows of several chunks


def test_an_epoch_streams_each_training_row_once(cancer_shards, cancer):
    batches = list(epoch_batches(cancer_shards, 1, seed=0, val_fraction=0.2, batch_size=16, shuffle_buffer=64))
    got = np.concatenate(batches)
    expected = []
    for path in cancer_shards.files:
        values = pq.read_table(path).to_pandas().to_numpy(np.float32)
        keep = row_hash(file_key(path), np.arange(1, len(values) + 1)) >= 0.2
        expected.append(values[keep])
    expected = np.concatenate(expected)
    assert got.shape == expected.shape
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    assert np.array_equal(order(got), order(expected))
    again = np.concatenate(list(epoch_batches(cancer_shards, 1, seed=0, val_fraction=0.2, batch_size=16,
                                              shuffle_buffer=64)))
    assert np.array_equal(got, again)  # an epoch is the same on every run
    other = np.concatenate(list(epoch_batches(cancer_shards, 2, seed=0, val_fraction=0.2, batch_size=16,
                                              shuffle_buffer=64)))
    assert not np.array_equal(got, other)  # the next epoch is shuffled anew


def test_a_stopped_epoch_leaves_no_reader_thread(cancer_shards):
    before = threading.active_count()
    stream = epoch_batches(cancer_shards, 1, seed=0, val_fraction=0.1, batch_size=4, shuffle_buffer=8, prefetch=1)
    next(stream)
    stream.close()
    assert threading.active_count() == before


def test_a_bad_shard_is_named_with_its_row_and_column(tmp_path, cancer):
    folder = tmp_path / "shards"
    write_shards(folder, cancer["train"][:60], cancer["names"], 2, suffix=".csv")
    text = (folder / "part-01.csv").read_text().splitlines()
    cells = text[3].split(",")
    cells[2] = "n/a?"
    text[3] = ",".join(cells)
    (folder / "part-01.csv").write_text("\n".join(text) + "\n")
    shards = Shards.find([folder])
    with pytest.raises(InputError, match=rf"part-01.csv.*row 3.*{cancer['names'][2]}"):
        list(epoch_batches(shards, 1, seed=0, val_fraction=0.1, batch_size=8, shuffle_buffer=16))


def test_shards_refuse_missing_columns_and_empty_globs(tmp_path):
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]}), tmp_path / "one.parquet")
    assert Shards.find([tmp_path / "one.parquet"], drop=["b"]).features == ("a",)
    pq.write_table(pa.table({"c": [1.0]}), tmp_path / "two.parquet")
    with pytest.raises(InputError, match="two.parquet: no column"):
        Shards.find([tmp_path / "one.parquet", tmp_path / "two.parquet"], drop=["b"])
    with pytest.raises(InputError, match="matches no file"):
        Shards.find([str(tmp_path / "*.csv")])


def _mixed_shards(folder, frame, parts: int = 4) -> None:
    """``frame`` cut into Parquet and CSV shards, alternately."""
    folder.mkdir(parents=True)
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), parts)):
        part = frame.iloc[rows]
        if i % 2:
            part.to_csv(folder / f"part-{i}.csv", index=False)
        else:
            pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{i}.parquet")


def test_mixed_shards_type_their_columns_as_the_whole_table_would(tmp_path):
    """Parquet and CSV shards of a table with text (commas inside), a boolean and missing cells:
    one pass gives the same column records (types, vocabularies, missing counts) as the whole
    table in memory, and the streamed bundle detects as the in-memory one does."""
    import pandas as pd

    from aeserve.tables import typed_table
    from aeserve.train.mixed import table_options
    from aeserve.train.pipeline import train_bundle

    from conftest import mixed_rows

    frame = mixed_rows(3000, 0)
    _mixed_shards(tmp_path / "shards", frame)
    shards = Shards.find([tmp_path / "shards"], min_category_count=5)
    whole = typed_table(frame, "whole")
    assert shards.specs == whole.specs
    config = ModelConfig(kind="vae", n_features=shards.encoding.width, hidden=(32, 16), latent=4,
                         **table_options(shards.specs))
    fit_config = FitConfig(epochs=40, seed=0)
    train_shards(shards, tmp_path / "streamed", config, fit_config)
    train_bundle(whole, tmp_path / "memory", config, fit_config)
    from sklearn.metrics import roc_auc_score

    import aeserve

    rows = pd.concat([mixed_rows(300, 1), mixed_rows(300, 2, anomalies=True)], ignore_index=True)
    labels = np.r_[np.zeros(300), np.ones(300)]
    streamed = roc_auc_score(labels, aeserve.load(tmp_path / "streamed").score(rows)["energy"])
    memory = roc_auc_score(labels, aeserve.load(tmp_path / "memory").score(rows)["energy"])
    assert streamed > 0.9 and abs(streamed - memory) < 0.04, (streamed, memory)


def test_a_column_of_ids_is_refused_in_the_typing_pass(tmp_path, monkeypatch):
    import aeserve.train.shards as shards_module

    monkeypatch.setattr(shards_module, "MAX_DISTINCT", 50)
    for i in range(2):
        pq.write_table(pa.table({"x": np.arange(40.0), "user": [f"u{i}-{k}" for k in range(40)]}),
                       tmp_path / f"s{i}.parquet")
    with pytest.raises(InputError, match="s1.parquet: column 'user' shows more than 50 distinct values.*--drop"):
        Shards.find([tmp_path])


def test_scan_counts_the_split_and_fingerprints_the_rows_as_in_memory(cancer_shards, cancer):
    scanned = scan(cancer_shards, 0.1, max_val_rows=10, sample_rows=50)
    assert scanned.rows == len(cancer["train"])
    from aeserve.train.data import data_sha256
    assert scanned.sha256 == data_sha256(cancer["train"])  # the same rows, in file order
    assert scanned.val_rows + scanned.train_rows == scanned.rows
    assert 0.05 < scanned.val_rows / scanned.rows < 0.16
    assert scanned.val_sample.shape == (10, 30) and scanned.train_sample.shape == (50, 30)
    # the statistics are those of the training rows
    train = np.concatenate([pq.read_table(p).to_pandas().to_numpy(np.float64)[
        row_hash(file_key(p), np.arange(1, pq.read_metadata(p).num_rows + 1)) >= 0.1] for p in cancer_shards.files])
    np.testing.assert_allclose(scanned.moments.mean, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scanned.moments.std, train.std(axis=0), rtol=1e-10)


def test_streamed_training_detects_as_well_as_in_memory(tmp_path, cancer_shards, cancer):
    from aeserve.tables import Table
    from aeserve.train.pipeline import train_bundle

    config = ModelConfig(kind="vae", n_features=30, hidden=(32, 16), latent=4)
    fit_config = FitConfig(epochs=120, batch_size=64, seed=0)
    streamed = train_shards(cancer_shards, tmp_path / "streamed", config, fit_config,
                            options=StreamOptions(shuffle_buffer=128))
    train_bundle(Table(cancer["train"], cancer["names"], "cancer.csv"), tmp_path / "memory", config, fit_config)
    a, b = cancer_auroc(streamed.path, cancer), cancer_auroc(tmp_path / "memory", cancer)
    assert a > 0.9 and abs(a - b) < 0.04, (a, b)
    import json
    manifest = json.loads((streamed.path / "manifest.json").read_text())
    assert manifest["training"]["data"]["source"] == "cancer/ (3 shards)"
    assert manifest["training"]["settings"]["split"] == "hash of (file name, row)"
    assert (streamed.path / "energy.onnx").is_file() and (streamed.path / "held_out.safetensors").is_file()


def test_streaming_refuses_robust_scaling(tmp_path, cancer_shards):
    with pytest.raises(OptionError, match="scaling 'robust'.*one pass"):
        train_shards(cancer_shards, tmp_path / "b", ModelConfig(kind="ae", n_features=30), FitConfig(epochs=1),
                     scaling="robust", export=False)


def _weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


class _StopAt:
    """on_epoch that raises KeyboardInterrupt (Ctrl-C) once epoch ``n`` has ended."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, epoch: int, *_):
        if epoch == self.n:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["dae", "vae"])  # both draw noise: the generator state is resumed too
def test_an_interrupted_run_resumed_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path, cancer, kind):
    config = ModelConfig(kind=kind, n_features=30, hidden=(16,), latent=3)
    fit_config = FitConfig(epochs=6, batch_size=64, patience=100, seed=3)
    rows = torch.from_numpy((cancer["train"] - cancer["train"].mean(0)) / cancer["train"].std(0))
    train, val = rows[:200], rows[200:]

    def model():
        torch.manual_seed(0)
        return build_model(config)

    straight = model()
    fit(straight, train, val, fit_config)
    stopped = model()
    checkpoints = Checkpointing(tmp_path / "ckpt", fingerprint={"data": "d"}, command="again --resume")
    with pytest.raises(Interrupted, match="epoch 3.*checkpoint of epoch 2.*again --resume") as info:
        fit(stopped, train, val, fit_config, checkpointing=checkpoints, on_epoch=_StopAt(3))
    assert info.value.exit_code == 130
    assert load_checkpoint(tmp_path / "ckpt").epoch == 2
    resumed = model()
    result = fit(resumed, train, val, fit_config,
                 checkpointing=Checkpointing(tmp_path / "ckpt", resume=True, fingerprint={"data": "d"}))
    assert result.resumed_from == 2 and len(result.val_energy) == 6
    for name, tensor in _weights(straight).items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    with pytest.raises(InputError, match="another run.*data"):
        fit(model(), train, val, fit_config,
            checkpointing=Checkpointing(tmp_path / "ckpt", resume=True, fingerprint={"data": "other"}))


def test_streamed_run_resumes_bit_for_bit(tmp_path, cancer_shards):
    config = ModelConfig(kind="dae", n_features=30, hidden=(16,), latent=3)
    fit_config = FitConfig(epochs=4, batch_size=32, patience=100, seed=1)
    scanned = scan(cancer_shards, 0.1)
    source = ShardRows(cancer_shards, scanned, 1, 0.1, 32, StreamOptions(shuffle_buffer=64))
    mean, std = scanned.moments.mean, scanned.moments.std

    def model():
        torch.manual_seed(0)
        m = build_model(config)
        m.set_preprocessing(torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
        return m

    val = model().preprocess(torch.from_numpy(scanned.val_sample)).detach()
    straight = model()
    fit(straight, source, val, fit_config)
    with pytest.raises(Interrupted):
        fit(model(), source, val, fit_config, checkpointing=Checkpointing(tmp_path / "c"), on_epoch=_StopAt(2))
    resumed = model()
    fit(resumed, source, val, fit_config, checkpointing=Checkpointing(tmp_path / "c", resume=True))
    for name, tensor in _weights(straight).items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_checkpoint_every_writes_safetensors_and_json_only(tmp_path, cancer):
    rows = torch.from_numpy((cancer["train"] - cancer["train"].mean(0)) / cancer["train"].std(0))
    torch.manual_seed(0)
    fit(build_model(ModelConfig(kind="ae", n_features=30, hidden=(8,), latent=2)), rows[:200], rows[200:],
        FitConfig(epochs=3), checkpointing=Checkpointing(tmp_path / "c", every=2))
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["checkpoint.json", "state.safetensors"]
    assert load_checkpoint(tmp_path / "c").epoch == 3  # the last epoch is saved as the run ends
    with pytest.raises(InputError, match="no checkpoint to resume"):
        load_checkpoint(tmp_path / "nothing")


def test_devices_resolve_on_this_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="cuda:1: torch .* sees no CUDA device"):
            resolve_device("cuda:1")
    with pytest.raises(OptionError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(OptionError, match="unknown precision"):
        Hardware(precision="fp8")


@pytest.mark.parametrize("kind", ["ae", "dae", "cae", "vae", "lvm"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_training_detects_and_exports_fp32(tmp_path, cancer, kind, precision):
    """Every kind trains under bf16 and fp16 autocast (fp16 with loss scaling) on this CPU, and
    the bundle it writes is fp32, exported and checked against torch as always."""
    from aeserve.tables import Table
    from aeserve.train.pipeline import train_bundle

    result = train_bundle(Table(cancer["train"], cancer["names"], "cancer.csv"), tmp_path / kind,
                          ModelConfig(kind=kind, n_features=30, hidden=(32, 16), latent=4),
                          FitConfig(epochs=60, seed=0), hardware=Hardware(device="cpu", precision=precision))
    assert all(np.isfinite(result.fit.val_energy))
    from safetensors.numpy import load_file
    assert {v.dtype for v in load_file(str(tmp_path / kind / "weights.safetensors")).values()} <= {
        np.dtype(np.float32), np.dtype(np.int64)}
    assert cancer_auroc(tmp_path / kind, cancer) > 0.85
