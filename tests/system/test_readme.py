"""README honesty: its test command is what CI runs, and every tour command works."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    demo, tests = (block.strip() for block in _bash_blocks(README)[:2])
    assert demo.endswith("aeserve demo") and "torch==2.13.0" in demo
    assert "pytest" in tests and "torch==2.13.0" in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines, "CI must run the README's test command verbatim"


def test_tour_commands_run(tmp_path):
    tour = README.split("<!-- tour -->", 1)[1]
    script = _bash_blocks(tour)[0]
    commands = [line for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) >= 20
    outputs = []
    for command in commands:
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        outputs.append(result)
    auroc = float(re.search(r"AUROC (\d\.\d+)", outputs[0].stderr).group(1))
    assert auroc > 0.9, outputs[0].stderr  # the demo's VAE: 0.954 when this was written
    assert (tmp_path / "triton-repo" / "cancer-vae-energy" / "config.pbtxt").is_file()
    assert (tmp_path / "models" / "cancer-vae" / "tensorrt" / "build.sh").is_file()
    assert list((tmp_path / "scored-by-ray").glob("*.parquet"))
    assert (tmp_path / "latent.png").stat().st_size > 10_000
    assert "AUROC" in (tmp_path / "report.html").read_text()
    assert (ROOT / "docs" / "latent-vae.png").is_file()  # the picture the README shows
    for name in ("scores.parquet", "scores.csv", "codes.csv", "decoded.csv", "rebuilt.csv", "samples.csv"):
        assert (tmp_path / name).is_file(), name
