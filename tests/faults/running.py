"""Run hotsauce in the background and signal it once it is inside a given stage."""

from __future__ import annotations

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


def start_in_background(args: list[str | Path], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hotsauce", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(marker: Path, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"hotsauce ended before reaching the fault point: {stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"hotsauce did not reach the fault point ({marker}) in {timeout}s")
        time.sleep(0.05)
