"""Child processes, always in their own process group, always reaped.

Every command hotsauce runs goes through here so that an error, Ctrl-C or
SIGTERM in the parent takes the whole tree of the child down with it
(mmdebstrap starts apt and dpkg, qemu-img starts threads, ...), and nothing
keeps running after hotsauce has exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from hotsauce.errors import CommandFailed
from hotsauce.host import ledger

# How long a child gets between SIGTERM and SIGKILL when we take it down.
TERMINATE_GRACE_SECONDS = 5.0


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's group, then SIGKILL it if it lingers; always reap."""
    if process.poll() is not None:
        _kill_group(process.pid, signal.SIGKILL)  # grandchildren may outlive the leader
        return
    _kill_group(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=TERMINATE_GRACE_SECONDS)
    _kill_group(process.pid, signal.SIGKILL)
    process.wait()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextmanager
def child_process(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running child (QEMU, gunicorn, a compressor) stopped on the way out."""
    process = subprocess.Popen(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    # Recorded until the group is stopped, so a SIGKILL at any point leaves a record.
    with ledger.held_process(process.pid):
        try:
            yield process
        finally:
            stop_process_group(process)


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion, capturing its output.

    Raises CommandFailed with the tail of stderr when it exits non-zero and
    `check` is set. Any exception while waiting (KeyboardInterrupt, the
    SIGTERM handler's Interrupted) takes the child's whole group down first.
    """
    args = [str(arg) for arg in argv]
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with ledger.held_process(process.pid):
        try:
            out, err = process.communicate(input_bytes)
        except BaseException:
            stop_process_group(process)
            raise
    result = subprocess.CompletedProcess(args, process.returncode, out, err)
    if check and process.returncode != 0:
        raise CommandFailed(args, process.returncode, err.decode(errors="replace"))
    return result


def output_of(argv: Sequence[str | Path], **kwargs: object) -> str:
    """stdout of a successful command, decoded and stripped."""
    return run(argv, **kwargs).stdout.decode().strip()  # type: ignore[arg-type]
