"""The shape of the code: the manifest is read through its records only, nothing outside train/
branches on a kind's name, CLI choices come from the registries, library errors name fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aeserve.errors import OptionError

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("src", "train", "export", "serve")


def _sources(*dirs: str):
    for folder in dirs:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _hits(pattern: str, files) -> list[str]:
    regex = re.compile(pattern)
    return [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in files
            for n, line in enumerate(path.read_text("utf-8").splitlines(), 1) if regex.search(line)]


def test_nothing_outside_the_manifest_module_indexes_the_manifest_dictionary():
    files = [p for p in _sources(*PACKAGE_DIRS) if p.name != "manifest.py"]
    assert _hits(r"manifest\s*\[|manifest\.get\(|manifest\.setdefault\(", files) == []


def test_nothing_outside_train_branches_on_a_kind_name():
    files = [p for p in _sources("src", "export", "serve")]
    kind = r"(?<!dtype\.)\bkind"  # a model kind, not numpy's dtype.kind
    assert _hits(kind + r"""\s*(==|!=)\s*["']|""" + kind + r"""\s+(not\s+)?in\s+\(["']""", files) == []


def test_every_cli_verb_is_a_plain_named_function():
    from aeserve.cli import app

    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        assert command.callback.__name__ == name.replace("-", "_")
        assert command.callback.__module__.startswith("aeserve.cli.")


def test_cli_choices_come_from_the_registries():
    from aeserve.cli.options import Backend, Kind
    from aeserve.serve.backends import list_backends
    from aeserve.train.registry import list_kinds

    assert [k.value for k in Kind] == list_kinds()
    assert [b.value for b in Backend] == ["auto", *list_backends()]


def test_library_option_errors_name_the_field_and_the_cli_names_the_flag(tmp_path):
    from aeserve.train.config import ModelConfig

    with pytest.raises(OptionError, match=r"option 'beta' does not apply to kind 'ae'") as caught:
        ModelConfig(kind="ae", n_features=3, beta=2.0)
    assert caught.value.option == "beta" and "--" not in str(caught.value)
    with pytest.raises(OptionError, match=r"mask must be in \[0, 1\), got 1.5"):
        ModelConfig(kind="dae", n_features=3, mask=1.5)
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n" + "\n".join(f"{i},{i % 3}" for i in range(20)) + "\n")
    result = run_cli("train", data, "--kind", "ae", "--beta", "2", "--out", tmp_path / "m")
    assert result.returncode == 2 and "--beta" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()
    result = run_cli("train", data, "--quantile", "1.5", "--out", tmp_path / "m")
    assert result.returncode == 2 and "--quantile" in result.stderr and "training" not in result.stderr


def test_the_manifest_architecture_types_every_field_the_model_config_shares():
    """The core reads architectures without torch through its own record; it must name every field
    that train's ModelConfig shares across kinds (the kinds' own options travel in its extra dict)."""
    import dataclasses

    from aeserve.manifest import Architecture
    from aeserve.train.config import ModelConfig

    assert {f.name for f in dataclasses.fields(ModelConfig)} == {f.name for f in dataclasses.fields(Architecture)}


def test_gpu_extras_bring_cuda_bindings_for_cuda_12_and_13():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("cuda-bindings>=12.6.1") for r in extras["gpu"])
    assert "tensorrt-cu12>=10" in extras["gpu-cu12"] and "cuda-bindings>=12.6.1,<13" in extras["gpu-cu12"]
