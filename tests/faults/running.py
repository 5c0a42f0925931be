"""Run hotsauce in the background and signal it once it is inside a given stage."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.images import REPO


def hotsauce_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def run_and_signal(
    args: list[str | Path], *, cwd: Path, env: dict[str, str], marker: Path, sig: signal.Signals, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Start `hotsauce ARGS`, wait until `marker` exists (the fault point is reached), send `sig`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hotsauce", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker, process, timeout)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def start_in_background(args: list[str | Path], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """hotsauce with its output in `log`: a pipe would stay open while orphans of a killed build live."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hotsauce", *map(str, args)], cwd=cwd, env=env, stdout=out, stderr=out, text=True
        )


def wait_for(marker: Path, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not glob.glob(str(marker)):  # the marker may be a pattern: inside a root of unknown name
        if process.poll() is not None:
            raise AssertionError(f"hotsauce ended (status {process.returncode}) before reaching the fault point")
        if time.monotonic() > deadline:
            raise AssertionError(f"hotsauce did not reach the fault point ({marker}) in {timeout}s")
        time.sleep(0.05)
