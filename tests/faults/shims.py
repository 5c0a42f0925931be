"""PATH shims that make one host tool fail or hang, so a build meets a real fault.

A shim is a small Python script named like the tool, in a folder put first
on PATH for the hotsauce subprocess. A hanging shim first writes a marker
file, so a test signals the build only once the tool is really running, and
keeps the shim's own path in its command line, so a test can find it if it
outlives the build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FAIL = """\
import sys
sys.stderr.write("{tool}: injected failure\\n")
sys.exit(3)
"""

HANG = """\
import pathlib, time
pathlib.Path({marker!r}).write_text("started")
time.sleep(600)
"""


def shim_folder(folder: Path, tool: str, action: str) -> Path:
    """A folder holding one shim: `tool` that fails ('fail') or hangs ('hang')."""
    folder.mkdir(parents=True, exist_ok=True)
    body = FAIL.format(tool=tool) if action == "fail" else HANG.format(marker=str(started_marker(folder, tool)))
    shim = folder / tool
    shim.write_text(f"#!{sys.executable}\n{body}")
    shim.chmod(0o755)
    return folder


def started_marker(folder: Path, tool: str) -> Path:
    return folder / f"{tool}.started"


def path_with(folder: Path) -> str:
    return f"{folder}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
