"""The wheel of the controller's own hotsauce, which each builder installs: the same version
as the controller's, from the controller, not from an index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hotsauce
from hotsauce.errors import ConfigError, StageFailed

_SOURCE = Path(hotsauce.__file__).resolve().parents[1]


def controller_wheel(folder: Path) -> Path:
    """Built from the checkout this hotsauce runs from (pip, with the project's build backend)."""
    if not (_SOURCE / "pyproject.toml").is_file():
        raise ConfigError(f"hotsauce runs from {_SOURCE}, not from a checkout: no wheel can be built from it; "
                          "give the wheel of this version with --wheel")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("hotsauce-*.whl"):
        old.unlink()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder), str(_SOURCE)],
        capture_output=True, text=True,
    )
    wheels = sorted(folder.glob(f"hotsauce-{hotsauce.__version__}-*.whl"))
    if result.returncode != 0 or not wheels:
        lines = result.stderr.strip().splitlines()
        raise StageFailed("fleet wheel", lines[-1] if lines else f"pip wheel exited with {result.returncode}")
    return wheels[0]


def given_wheel(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"--wheel {path}: no such file")
    if not path.name.startswith(f"hotsauce-{hotsauce.__version__}-"):
        raise ConfigError(f"--wheel {path}: not a wheel of hotsauce {hotsauce.__version__}, the controller's version")
    return path.resolve()
