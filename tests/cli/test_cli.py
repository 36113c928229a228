"""The CLI end to end, as a user runs it: separate processes, real files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import aeserve
from aeserve.tables import read_table
from aeserve.train.demo import make_demo_data

from conftest import run_cli

VERBS = ["train", "export", "score", "encode", "decode", "reconstruct", "sample", "info", "demo"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Demo data plus an ae and a vae bundle trained through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    make_demo_data(root)
    for kind in ("ae", "vae"):
        result = run_cli("train", root / "train.csv", "--kind", kind, "--hidden", "32,16",
                         "--latent", "4", "--epochs", "60", "--out", root / kind, cwd=root)
        assert result.returncode == 0, result.stderr
        assert "saved" in result.stderr and "ONNX graphs exported and checked" in result.stderr
    return root


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_an_example(verb):
    result = run_cli(verb, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout
    assert "Example" in result.stdout


def test_score_writes_one_row_per_input_row_matching_the_api(workdir):
    result = run_cli("score", workdir / "ae", workdir / "test.csv", "-o", workdir / "scores.csv")
    assert result.returncode == 0, result.stderr
    assert "scored 312 rows" in result.stderr and "rows/s" in result.stderr
    model = aeserve.load(workdir / "ae")  # auto: the CPU backend measured fastest here, as the CLI's
    assert f"backend {model.backend.name}" in result.stderr
    table = pacsv.read_csv(workdir / "scores.csv")
    assert table.column_names == ["row", "energy", "reconstruction", "regulariser", "p_value", "anomaly"]
    assert table.column("row").to_pylist() == list(range(1, 313))  # 1-based data rows, input order
    rows = read_table(workdir / "test.csv", drop=["id", "label"]).values
    expected = model.score(rows)
    np.testing.assert_array_equal(table.column("energy").to_numpy().astype(np.float32), expected["energy"])
    np.testing.assert_array_equal(table.column("p_value").to_numpy(), expected["p_value"])  # float64, exact in text
    np.testing.assert_array_equal(table.column("anomaly").to_numpy(), expected["anomaly"])


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_score_output_formats(workdir, suffix):
    out = workdir / f"scores{suffix}"
    assert run_cli("score", workdir / "ae", workdir / "test.csv", "-o", out, "-q").returncode == 0
    data = pq.read_table(out).column("energy").to_numpy() if suffix == ".parquet" else np.load(out)[:, 0]
    assert data.shape == (312,)


def test_score_json_summary_and_threshold(workdir):
    result = run_cli("score", workdir / "ae", workdir / "test.csv", "-o", workdir / "s.csv",
                     "--json", "--threshold", "1e9", "--backend", "torch")
    summary = json.loads(result.stdout)
    assert summary["rows"] == 312 and summary["anomalies"] == 0
    assert summary["backend"].startswith("torch")


def test_encode_decode_reconstruct_sample(workdir):
    vae = workdir / "vae"
    assert run_cli("encode", vae, workdir / "test.csv", "-o", workdir / "codes.csv").returncode == 0
    codes = pacsv.read_csv(workdir / "codes.csv")
    assert codes.column_names == ["row", "z0", "z1", "z2", "z3", "logvar0", "logvar1", "logvar2", "logvar3"]
    assert run_cli("decode", vae, workdir / "codes.csv", "-o", workdir / "decoded.csv").returncode == 0
    assert run_cli("reconstruct", vae, workdir / "test.csv", "-o", workdir / "rebuilt.csv").returncode == 0
    decoded = read_table(workdir / "decoded.csv", drop=["row"]).values
    rebuilt = read_table(workdir / "rebuilt.csv", drop=["row"]).values
    assert decoded.shape == (312, 30)
    np.testing.assert_allclose(decoded, rebuilt, rtol=1e-5)
    for name in ("s1.csv", "s2.csv"):
        assert run_cli("sample", vae, "-n", "5", "--seed", "7", "-o", workdir / name).returncode == 0
    assert (workdir / "s1.csv").read_bytes() == (workdir / "s2.csv").read_bytes()


def test_info_and_reexport(workdir):
    result = run_cli("info", workdir / "ae")
    assert result.returncode == 0
    for text in ("kind", "threshold", "energy.onnx", "onnxruntime"):
        assert text in result.stdout
    copy = workdir / "ae-copy"
    shutil.copytree(workdir / "ae", copy)
    (copy / "energy.onnx").unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"].pop("energy.onnx")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("export", copy, "--format", "onnx")
    assert result.returncode == 0, result.stderr
    assert (copy / "energy.onnx").is_file() and "max abs error" in result.stderr


# --- bad input: one line, exit 2, no traceback, no output left behind ----------------------

def _bad_csv(workdir, name: str, mutate) -> str:
    lines = (workdir / "test.csv").read_text().splitlines()
    lines = mutate(lines)
    path = workdir / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _cases(workdir):
    header = (workdir / "test.csv").read_text().splitlines()[0].split(",")
    col3 = header[3].strip('"')

    def set_cell(value):
        def mutate(lines):
            cells = lines[5].split(",")
            cells[3] = value
            lines[5] = ",".join(cells)
            return lines
        return mutate

    def drop_column(lines):
        return [",".join(line.split(",")[:3] + line.split(",")[4:]) for line in lines]

    tampered = workdir / "tampered"
    shutil.copytree(workdir / "ae", tampered, dirs_exist_ok=True)
    with open(tampered / "weights.safetensors", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    missing = workdir / "missing"
    shutil.copytree(workdir / "ae", missing, dirs_exist_ok=True)
    (missing / "energy.onnx").unlink()
    unknown = workdir / "unknown-kind"
    shutil.copytree(workdir / "ae", unknown, dirs_exist_ok=True)
    manifest = json.loads((unknown / "manifest.json").read_text())
    manifest["kind"] = "gan"
    (unknown / "manifest.json").write_text(json.dumps(manifest))
    empty = workdir / "empty.csv"
    empty.write_text("")
    np.save(workdir / "narrow.npy", np.zeros((4, 29), dtype=np.float32))
    np.save(workdir / "flat.npy", np.zeros(30, dtype=np.float32))
    truncated = workdir / "truncated.csv"
    text = (workdir / "test.csv").read_text()
    truncated.write_text(text[: len(text) // 2].rsplit(",", 3)[0])
    return {
        "text in a number column": (["ae", _bad_csv(workdir, "text.csv", set_cell("abc"))],
                                    ["row 5", repr(col3), "expected a number", "'abc'"]),
        "NaN": (["ae", _bad_csv(workdir, "nan.csv", set_cell("nan"))], ["row 5", repr(col3), "not a finite"]),
        "inf": (["ae", _bad_csv(workdir, "inf.csv", set_cell("inf"))], ["row 5", repr(col3), "not a finite"]),
        "missing value": (["ae", _bad_csv(workdir, "gap.csv", set_cell(""))], ["row 5", repr(col3), "missing"]),
        "wrong column count (csv)": (["ae", _bad_csv(workdir, "narrow.csv", drop_column)],
                                     ["lacks 1", col3, "expected 30 columns"]),
        "wrong column count (npy)": (["ae", workdir / "narrow.npy"], ["has 29 columns, expected 30"]),
        "1-D npy": (["ae", workdir / "flat.npy"], ["flat.npy", "1-D array of 30 values", "(rows, features)",
                                                   "a.reshape(1, -1) for one row"]),
        "empty file": (["ae", empty], ["empty.csv", "empty"]),
        "truncated file": (["ae", truncated], ["truncated.csv", "cannot parse CSV", "data row", "truncated or malformed"]),
        "no such file": (["ae", workdir / "nope.csv"], ["nope.csv", "no such file"]),
        "tampered bundle": ([tampered, workdir / "test.csv"], ["weights.safetensors", "sha256"]),
        "missing bundle file": ([missing, workdir / "test.csv"], ["energy.onnx", "missing"]),
        "unknown kind": ([unknown, workdir / "test.csv"], ["unknown kind 'gan'"]),
        "not a bundle": ([workdir, workdir / "test.csv"], ["not a bundle"]),
    }


CASES = ["text in a number column", "NaN", "inf", "missing value", "wrong column count (csv)",
         "wrong column count (npy)", "1-D npy", "empty file", "truncated file", "no such file",
         "tampered bundle", "missing bundle file", "unknown kind", "not a bundle"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line_and_exit_2(workdir, case):
    args, expected = _cases(workdir)[case]
    bundle, data = args
    bundle = workdir / bundle if isinstance(bundle, str) else bundle
    out = workdir / f"out-{case.replace(' ', '_')}.csv"
    result = run_cli("score", bundle, data, "-o", out)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out.exists()
    assert not list(workdir.glob(f".{out.name}.*"))


def test_train_rejects_unknown_kind_and_text_in_a_numeric_column(workdir):
    result = run_cli("train", workdir / "test.csv", "--kind", "gan", "--out", workdir / "x")
    assert result.returncode == 2 and "gan" in result.stderr
    # a column of numbers with a stray text cell is numeric, and the cell an error (a column of
    # text would be categorical: tests/cli/test_mixed_tables.py)
    text = _bad_csv(workdir, "train-text.csv", lambda lines: [lines[0] + ",note", lines[1] + ",hello"] +
                    [line + f",{i}" for i, line in enumerate(lines[2:])])
    result = run_cli("train", text, "--out", workdir / "x")
    assert result.returncode == 2
    assert "row 1, column 'note': expected a number, got 'hello'" in result.stderr
    assert not (workdir / "x").exists()


def test_train_refuses_to_overwrite_without_force(workdir):
    result = run_cli("train", workdir / "train.csv", "--out", workdir / "ae", "--epochs", "1")
    assert result.returncode == 2 and "--force" in result.stderr
    assert aeserve.load(workdir / "ae").bundle.manifest.training.epochs_run > 1


def test_every_kind_option_is_a_train_flag_naming_its_kinds_and_default():
    """A kind option is one field of its record (train/options.py): its flag comes from there."""
    from aeserve.cli.options import flag_for
    from aeserve.train.options import KIND_OPTIONS, option_help
    from aeserve.train.registry import get_kind

    assert {kind: get_kind(kind).options_type for kind in KIND_OPTIONS} == KIND_OPTIONS
    text = " ".join(run_cli("train", "--help").stdout.split())  # unwrapped
    items = option_help()
    assert {i.name for i in items} == {n for r in KIND_OPTIONS.values() for n in r.names()} - {"free_seed"}
    for item in items:
        assert flag_for(item.name) in text
        assert item.text().split(" (default")[0][:40] in text, item.name
    sparsity = next(i for i in items if i.name == "sparsity")
    assert sparsity.kinds == ("ae", "dae") and sparsity.text().endswith("(default 1).")
