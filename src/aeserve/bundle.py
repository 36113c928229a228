"""The bundle: a directory holding a manifest, safetensors weights and ONNX graphs.

The manifest (``manifest.json``) is the single source of truth a runtime needs: input
spec, baked-in preprocessing, energy spec, latent sampler, threshold, training record,
versions, the graphs' tensor names and the sha256 of every other file in the bundle.
This module reads, verifies and writes it; it imports neither torch nor onnx.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aeserve.atomic import write_text_atomic
from aeserve.errors import BundleError

__all__ = [
    "SCHEMA_VERSION",
    "KNOWN_KINDS",
    "MANIFEST",
    "WEIGHTS",
    "GRAPH_FILES",
    "GRAPH_INPUTS",
    "code_columns",
    "Bundle",
    "sha256_file",
    "write_manifest",
]

SCHEMA_VERSION = 1
#: model kinds this version reads; aeserve.train.kinds registers exactly these
KNOWN_KINDS = ("ae", "cae", "dae", "lvm", "vae")
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
#: graph name -> file name; the batch axis of every graph is dynamic.
GRAPH_FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "energy": "energy.onnx"}
#: graph name -> its one input tensor: raw rows y, or codes z
GRAPH_INPUTS = {"encoder": "y", "decoder": "z", "energy": "y"}


def code_columns(latent: int, prefix: str = "z") -> list[str]:
    """Column names for codes in files: z0, z1, ..."""
    return [f"{prefix}{i}" for i in range(latent)]

_REQUIRED_KEYS = ("schema_version", "kind", "input", "preprocessing", "architecture", "energy",
                  "latent", "threshold", "files")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Record the sha256 of every file in ``directory`` (but the manifest) and write it atomically."""
    directory = Path(directory)
    files = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel != MANIFEST and not path.name.startswith("."):
            files[rel] = sha256_file(path)
    manifest = dict(manifest, files=files)
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its parsed manifest."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Bundle":
        """Read ``path/manifest.json``; with ``verify``, check every listed file's sha256."""
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"{path}: no such bundle directory")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{path}: not a bundle (no {MANIFEST})")
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
        missing = [key for key in _REQUIRED_KEYS if key not in manifest]
        if missing:
            raise BundleError(f"{manifest_path}: missing keys {', '.join(missing)}")
        if manifest["schema_version"] != SCHEMA_VERSION:
            raise BundleError(f"{manifest_path}: schema_version {manifest['schema_version']!r} "
                              f"is not supported (this aeserve reads {SCHEMA_VERSION})")
        if manifest["kind"] not in KNOWN_KINDS:
            raise BundleError(f"{manifest_path}: unknown kind {manifest['kind']!r}; "
                              f"this aeserve knows {', '.join(KNOWN_KINDS)}")
        bundle = cls(path, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Raise BundleError naming the first file that is missing or whose sha256 differs."""
        for rel, expected in self.manifest["files"].items():
            file = self.path / rel
            if not file.is_file():
                raise BundleError(f"{self.path}: {rel} is listed in {MANIFEST} but missing")
            if sha256_file(file) != expected:
                raise BundleError(f"{file}: sha256 does not match {MANIFEST} "
                                  "(file modified or corrupted; re-export or retrain)")

    @property
    def kind(self) -> str:
        """The model kind (ae, dae, cae, vae, ...)."""
        return self.manifest["kind"]

    @property
    def n_features(self) -> int:
        """Width of one input row."""
        return len(self.manifest["input"]["features"])

    @property
    def features(self) -> list[str]:
        """Input feature names, in graph order."""
        return list(self.manifest["input"]["features"])

    @property
    def latent_size(self) -> int:
        """Size of the code z."""
        return int(self.manifest["latent"]["size"])

    @property
    def energy_terms(self) -> list[str]:
        """Names of the energy's terms; they sum to the energy."""
        return list(self.manifest["energy"]["terms"])

    @property
    def threshold(self) -> float:
        """Anomaly threshold on the energy."""
        return float(self.manifest["threshold"]["value"])

    def graph(self, name: str, precision: str = "fp32") -> dict[str, Any]:
        """The manifest's entry for graph ``name`` (file, inputs, outputs), or BundleError."""
        graphs = self.manifest.get("graphs" if precision == "fp32" else f"graphs_{precision}", {})
        if name not in graphs:
            hint = "--quantize int8" if precision == "int8" else "--format onnx"
            raise BundleError(f"{self.path}: has no {precision} {name} graph; run `aeserve export {self.path} {hint}`")
        return graphs[name]
