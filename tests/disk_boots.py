"""Booting a built set through `hotsauce boot --json`, for the whole-disk and trixie tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.images import run_hotsauce

# Generous: each TCG boot takes a minute or two alone, several on a busy machine.
BOOT_TIMEOUT = "600"


def boot(image_set: Path, log_dir: Path, *args: str) -> dict[str, Any]:
    """The verdict of one boot with `args` (--firmware, --check, ...); fails unless the guest came up."""
    result = run_hotsauce("boot", image_set, "--json", "--timeout", BOOT_TIMEOUT, "--log-dir", log_dir, *args,
                          cwd=image_set.parent, timeout=900)
    verdict: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    assert verdict.get("booted"), result.stdout[-2000:] + result.stderr[-2000:]
    return verdict
