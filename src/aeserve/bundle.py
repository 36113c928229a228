"""The bundle: a directory holding a manifest, safetensors weights and ONNX graphs.

The manifest (``manifest.json``, typed in :mod:`aeserve.manifest`) is the single source of
truth a runtime needs: input spec, baked-in preprocessing, energy spec, latent sampler,
threshold, training record, versions, the graphs' tensor names and the sha256 of every
other file in the bundle. This module opens, verifies and writes bundles; it imports
neither torch nor onnx.

A bundle is untrusted input. Opening one never executes code (JSON, safetensors and ONNX
only; no pickle), the manifest's size and nesting are bounded, and every path it names
(``Bundle.file``) must stay inside the bundle: no absolute path, no ``..``, no symlink that
leads out. Graphs must be listed among the hashed files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from aeserve.atomic import write_text_atomic
from aeserve.errors import BundleError
from aeserve.manifest import KNOWN_KINDS, SCHEMA_VERSION, GraphRecord, Manifest

__all__ = [
    "SCHEMA_VERSION",
    "KNOWN_KINDS",
    "MANIFEST",
    "WEIGHTS",
    "GRAPH_FILES",
    "GRAPH_INPUTS",
    "code_columns",
    "Bundle",
    "Manifest",
    "sha256_file",
    "write_manifest",
]

MANIFEST = "manifest.json"
#: a manifest larger or more deeply nested than this is refused before it is parsed
MAX_MANIFEST_BYTES = 4 << 20
MAX_MANIFEST_DEPTH = 32
WEIGHTS = "weights.safetensors"
#: graph name -> file name; the batch axis of every graph is dynamic.
GRAPH_FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "energy": "energy.onnx"}
#: graph name -> its one input tensor: raw rows y, or codes z
GRAPH_INPUTS = {"encoder": "y", "decoder": "z", "energy": "y"}


def code_columns(latent: int, prefix: str = "z") -> list[str]:
    """Column names for codes in files: z0, z1, ..."""
    return [f"{prefix}{i}" for i in range(latent)]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows_sha256(values) -> str:
    """sha256 of rows as contiguous float32, the training data's fingerprint in the manifest
    (``training.data.sha256``); ``aeserve calibrate`` compares it to refuse the training data."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float32).tobytes()).hexdigest()


def write_manifest(directory: str | os.PathLike, manifest: Manifest) -> Manifest:
    """Record the sha256 of every file in ``directory`` (but the manifest) and write it atomically;
    returns the manifest as written."""
    directory = Path(directory)
    files = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel != MANIFEST and not path.name.startswith("."):
            files[rel] = sha256_file(path)
    manifest = dataclasses.replace(manifest, schema_version=SCHEMA_VERSION, files=files)
    write_text_atomic(directory / MANIFEST, manifest.dumps())
    return manifest


def _relative(rel: str, bundle: Path) -> str:
    """``rel`` if it is a plain relative path (no absolute path, drive, ``..`` or NUL)."""
    parts = str(rel).replace("\\", "/").split("/")
    if not rel or str(rel).startswith(("/", "\\")) or ":" in parts[0] or ".." in parts or "\0" in str(rel):
        raise BundleError(f"{bundle}: {MANIFEST} names {str(rel)[:100]!r}, which is not a path inside the bundle")
    return str(rel)


def _inside(bundle: Path, path: Path, rel: str) -> Path:
    """``path`` if it resolves (symlinks followed) inside ``bundle``."""
    root = bundle.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise BundleError(f"{bundle}: {str(rel)[:100]!r} leads outside the bundle (a symlink or a path out of it)")
    return path


def _check_nesting(text: str, source: Path) -> None:
    """BundleError when JSON ``text`` nests arrays/objects deeper than MAX_MANIFEST_DEPTH (outside strings)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_MANIFEST_DEPTH:
                raise BundleError(f"{source}: nested deeper than {MAX_MANIFEST_DEPTH} levels; not a manifest")
        elif ch in "]}":
            depth -= 1


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its typed manifest."""

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Bundle":
        """Read ``path/manifest.json`` (any schema version); with ``verify``, check every listed file's sha256."""
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"{path}: no such bundle directory")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{path}: not a bundle (no {MANIFEST})")
        _inside(path, manifest_path, MANIFEST)
        size = manifest_path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest_path}: {size} bytes, more than a manifest may hold ({MAX_MANIFEST_BYTES})")
        try:
            text = manifest_path.read_text("utf-8")
            _check_nesting(text, manifest_path)
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
        bundle = cls(path, Manifest.from_json(data, str(manifest_path)))
        bundle.check_paths()
        if verify:
            bundle.verify()
        return bundle

    def file(self, rel: str) -> Path:
        """The bundle file ``rel`` names; BundleError when it would resolve outside the bundle."""
        return _inside(self.path, self.path / _relative(rel, self.path), rel)

    def check_paths(self) -> None:
        """Every path the manifest names stays inside the bundle."""
        for rel in self.manifest.files:
            self.file(rel)
        for graphs in self.manifest.graphs.values():
            for record in graphs.values():
                self.file(record.file)

    def graph_file(self, name: str, precision: str = "fp32") -> Path:
        """The file of graph ``name`` for a runtime to load: inside the bundle and among the files
        the manifest hashes (so ``verify`` has checked it); else BundleError."""
        record = self.graph(name, precision)
        if record.file not in self.manifest.files:
            raise BundleError(f"{self.path}: the {precision} {name} graph {record.file!r} is not among the files "
                              f"{MANIFEST} hashes; re-export it: aeserve export {self.path}")
        return self.file(record.file)

    def hashed_file(self, rel: str) -> Path:
        """The bundle file ``rel`` if the manifest hashes it (so ``verify`` has checked it); else BundleError."""
        if rel not in self.manifest.files:
            raise BundleError(f"{self.path}: {rel!r} is not among the files {MANIFEST} hashes; "
                              f"re-export it: aeserve export {self.path}")
        return self.file(rel)

    def kept_rows(self):
        """(train, validation) rows kept at training for int8 calibration, raw units, each
        (n, width) float32; None when the bundle keeps none (``aeserve train --keep-rows 0``)."""
        record = self.manifest.training.kept_rows if self.manifest.training else None
        if record is None:
            return None
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(self.hashed_file(record.file)))
            train, validation = tensors["train"], tensors["validation"]
        except (SafetensorError, KeyError, OSError) as exc:
            raise BundleError(f"{self.path / record.file}: not the kept rows "
                              f"(safetensors tensors train and validation): {exc}") from None
        for name, rows in (("train", train), ("validation", validation)):
            if rows.ndim != 2 or rows.shape[1] != self.n_features or rows.dtype.name != "float32":
                raise BundleError(f"{self.path / record.file}: {name} is {rows.dtype.name} {rows.shape}, "
                                  f"expected float32 (rows, {self.n_features})")
        return train, validation

    def held_out_energies(self):
        """The held-out validation energies, (rows,) float64 sorted ascending, the reference of
        conformal p-values; None when the bundle keeps none (trained before they were kept)."""
        record = self.manifest.training.held_out if self.manifest.training else None
        if record is None:
            return None
        import numpy as np
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = self.hashed_file(record.file)
        try:
            energies = load_file(str(path))["energy"]
        except (SafetensorError, KeyError, OSError) as exc:
            raise BundleError(f"{path}: not held-out energies (a safetensors tensor energy): {exc}") from None
        energies = np.asarray(energies, np.float64)
        if energies.ndim != 1 or energies.size != record.rows or not np.isfinite(energies).all() \
                or (np.diff(energies) < 0).any():
            raise BundleError(f"{path}: energy must be {record.rows} finite values sorted ascending, "
                              f"got {energies.dtype.name} {energies.shape}")
        return energies

    def verify(self) -> None:
        """Raise BundleError naming the first file that is missing or whose sha256 differs."""
        for rel, expected in self.manifest.files.items():
            file = self.file(rel)
            if not file.is_file():
                raise BundleError(f"{self.path}: {rel} is listed in {MANIFEST} but missing")
            if sha256_file(file) != expected:
                raise BundleError(f"{file}: sha256 does not match {MANIFEST} "
                                  "(file modified or corrupted; re-export or retrain)")

    def write(self, manifest: Manifest) -> "Bundle":
        """Write ``manifest`` (files re-hashed) into this bundle; returns the bundle as it now is."""
        return Bundle(self.path, write_manifest(self.path, manifest))

    @property
    def kind(self) -> str:
        """The model kind (ae, dae, cae, vae, lvm)."""
        return self.manifest.kind

    @property
    def n_features(self) -> int:
        """Width of one input row."""
        return self.manifest.input.width

    @property
    def features(self) -> list[str]:
        """Input feature names, in graph order."""
        return list(self.manifest.input.features)

    @property
    def latent_size(self) -> int:
        """Size of the code z."""
        return self.manifest.latent.size

    @property
    def energy_terms(self) -> list[str]:
        """Names of the energy's terms; they sum to the energy."""
        return list(self.manifest.energy.terms)

    @property
    def threshold(self) -> float:
        """Anomaly threshold on the energy."""
        return self.manifest.threshold.value

    def graph(self, name: str, precision: str = "fp32") -> GraphRecord:
        """The record of graph ``name`` (file, inputs, outputs), or BundleError saying how to export it."""
        record = self.manifest.graph(name, precision)
        if record is None:
            hint = "--quantize int8" if precision.startswith("int8") else "--format onnx"
            raise BundleError(f"{self.path}: has no {precision} {name} graph; run `aeserve export {self.path} {hint}`")
        return record
