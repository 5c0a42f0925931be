"""Booting a built set through `hotsauce boot --json`, for the whole-disk and trixie tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.images import run_hotsauce

# Generous: each TCG boot takes a minute or two alone, several on a busy machine.
BOOT_TIMEOUT = "600"


@dataclass(frozen=True)
class BootRun:
    """What one `hotsauce boot --json` said: its verdict, and its output for a failing assertion."""

    verdict: dict[str, Any]
    output: str

    def booted(self) -> dict[str, Any]:
        """The verdict; fails unless the guest came up."""
        assert self.verdict.get("booted"), self.output
        return self.verdict


def boot_run(image_set: Path, log_dir: Path, *args: str) -> BootRun:
    """One boot with `args` (--firmware, --check, ...), whatever its outcome."""
    result = run_hotsauce("boot", image_set, "--json", "--timeout", BOOT_TIMEOUT, "--log-dir", log_dir, *args,
                          cwd=image_set.parent, timeout=900)
    verdict: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return BootRun(verdict, result.stdout[-2000:] + result.stderr[-2000:])


def boot(image_set: Path, log_dir: Path, *args: str) -> dict[str, Any]:
    """The verdict of one boot with `args` (--firmware, --check, ...); fails unless the guest came up."""
    return boot_run(image_set, log_dir, *args).booted()


def boots_at_once(image_set: Path, log_dir: Path, runs: Mapping[str, Sequence[str]]) -> dict[str, BootRun]:
    """Several boots of one set, started together, by name; each logs in log_dir/NAME.

    A TCG guest keeps about one core busy: on this project's two-core machines, two boots of
    the reference disk took 52 s together against 83 s one after the other."""
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        started = {name: pool.submit(boot_run, image_set, log_dir / name, *args) for name, args in runs.items()}
        return {name: future.result() for name, future in started.items()}
