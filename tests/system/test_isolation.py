"""The runtime never imports torch; the wheel holds every module; the public API imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"src/aeserve": "aeserve", "train": "aeserve/train", "export": "aeserve/export",
          "serve": "aeserve/serve"}


def _python(code: str, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_runtime_import_leaves_torch_out():
    code = "import sys, aeserve, aeserve.serve, aeserve.serve.files, aeserve.cli; print('torch' in sys.modules)"
    assert _python(code) == "False"


def test_help_leaves_torch_out():
    code = ("import sys\nfrom aeserve.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stderr.strip() == "False"
    assert "score" in result.stdout


def test_score_runs_without_torch(bundles, cancer, tmp_path):
    import numpy as np

    np.save(tmp_path / "rows.npy", cancer["anomalies"])
    code = ("import sys\nfrom aeserve.cli import main\n"
            f"try:\n    main(['score', {str(bundles['ae'])!r}, {str(tmp_path / 'rows.npy')!r}, "
            f"'-o', {str(tmp_path / 'out.csv')!r}, '-q'])\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    assert _python(code) == "False True"
    assert (tmp_path / "out.csv").is_file()


def test_public_names_import():
    import aeserve
    import aeserve.errors
    import aeserve.serve

    for module in (aeserve, aeserve.errors, aeserve.serve):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert issubclass(aeserve.InputError, aeserve.AeserveError)


def test_serve_never_imports_train_or_export_at_module_level():
    for path in (ROOT / "serve").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if line.startswith(("import ", "from ")):
                assert "aeserve.train" not in line and "aeserve.export" not in line, (path, line)
                assert "torch" not in line.split()[1], (path, line)


def test_wheel_contains_every_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                             "--no-build-isolation", "-w", str(tmp_path), "-q"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("aeserve-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, package in STAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            expected.add(f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
    assert expected, "no modules found"
    missing = sorted(expected - names)
    assert not missing, missing
    # every stage folder with modules is a package (has __init__.py)
    for name in expected:
        assert f"{name.rsplit('/', 1)[0]}/__init__.py" in names, name


def test_help_leaves_numpy_out_too():
    """`aeserve --help` stays fast: the CLI's choices come from registries that import neither
    torch nor numpy (about 0.05 s of a 0.2 s start)."""
    code = ("import sys\nfrom aeserve.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numpy', 'torch', 'onnxruntime', 'pyarrow') if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stderr.strip() == "[]"
