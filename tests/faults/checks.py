"""What every fault test checks afterwards: the host is as it was, and one line said why."""

from __future__ import annotations

import os
import subprocess
from itertools import pairwise
from pathlib import Path

from tests.leaks import held_resources


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes (other than this one) that mention `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def processes_rooted_under(folder: Path) -> list[str]:
    """Live processes whose root directory is below `folder` (a chroot into the image), and
    the sandboxes of roots below it (their processes see the root as `/`: their bwrap binds it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(Path(entry / "root").resolve()).startswith(str(folder)) or _sandbox_below(entry, folder):
                    found.append(entry.name)
            except OSError:
                continue
    return found


def _sandbox_below(process: Path, folder: Path) -> bool:
    argv = (process / "cmdline").read_bytes().split(b"\0")
    if Path(argv[0].decode(errors="replace")).name not in ("bwrap", "setpriv"):
        return False
    return any(option == b"--bind" and value.startswith(str(folder).encode())
               for option, value in pairwise(argv))


def leftovers_under(folder: Path) -> list[str]:
    """Loop devices backed by, mounts under, and processes naming `folder`."""
    return sorted(held_resources(str(folder))) + processes_mentioning(str(folder))


def one_line_reason(result: subprocess.CompletedProcess[str]) -> str:
    """The last line of stderr, checked to be hotsauce's one-line reason (no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("hotsauce: "), result.stderr
    return lines[-1]


def assert_nothing_left(
    result: subprocess.CompletedProcess[str],
    *,
    scratch: Path,
    work: Path,
    output: Path,
    run_dir: Path | None = None,
    held_before: frozenset[str] = frozenset(),
) -> str:
    """The checks after a fault; returns the one-line reason.

    `held_before`: what the test itself holds under `scratch` (a tmpfs it mounted).
    """
    assert result.returncode != 0, result.stderr
    reason = one_line_reason(result)
    assert [item for item in leftovers_under(scratch) if item not in held_before] == []
    assert list(work.iterdir()) == [], "temporary files left in --work-dir"
    assert not output.exists() and not output.is_symlink(), f"{output} was written"
    beside = [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.partial-")]
    assert beside == [], f"partial outputs left beside -o: {beside}"
    if run_dir is not None:
        assert list(run_dir.glob("*.json")) == [], "the build's ledger was left in the run folder"
    return reason
