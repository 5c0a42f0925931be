"""Child processes, always in their own process group, always reaped.

Every command hotsauce runs goes through here so that an error, Ctrl-C or
SIGTERM in the parent takes the whole tree of the child down with it
(mmdebstrap starts apt and dpkg, qemu-img starts threads, ...), and nothing
keeps running after hotsauce has exited. A wait also ends when the build
running in this thread is cancelled (hotsauce.host.cancel).

For tests without root, every command can be answered by a stand-in
(`commands_answered_by`), the way diskimage-builder's block-device tests
record the commands they would run; see `CommandStandIn`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Protocol

from hotsauce.errors import CommandFailed
from hotsauce.host import cancel, ledger

# How long a child gets between SIGTERM and SIGKILL when we take it down.
TERMINATE_GRACE_SECONDS = 5.0


class CommandStandIn(Protocol):
    """What answers for the host's tools while `commands_answered_by` is in force.

    Nothing is started by `run` then: the stand-in sees each command and gives
    its result (a non-zero status fails as a real one would). `child_process`
    starts what the stand-in returns for the command, so tools that only read
    and write files (tar, a compressor) may really run.
    """

    def run(self, argv: list[str], input_bytes: bytes | None) -> subprocess.CompletedProcess[bytes]: ...

    def start(self, argv: list[str]) -> list[str]: ...


# Only a `with commands_answered_by(...)` block sets it, and only for its own thread
# and context: nothing under hotsauce/ enters one (tests/test_pipeline.py checks),
# so a real build always runs real commands.
_stand_in: ContextVar[CommandStandIn | None] = ContextVar("hotsauce_command_stand_in", default=None)


@contextmanager
def commands_answered_by(stand_in: CommandStandIn) -> Iterator[CommandStandIn]:
    """For tests: within this block, in this thread, `stand_in` answers every command."""
    token = _stand_in.set(stand_in)
    try:
        yield stand_in
    finally:
        _stand_in.reset(token)


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
    args = [str(arg) for arg in argv]
    if (stand_in := _stand_in.get()) is not None:
        args = stand_in.start(args)
    process = subprocess.Popen(
        args,
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
    SIGTERM handler's Interrupted, a cancel) takes the child's whole group
    down first.
    """
    args = [str(arg) for arg in argv]
    stand_in = _stand_in.get()
    if stand_in is not None:
        result = stand_in.run(args, input_bytes)
    else:
        result = _run_to_completion(args, cwd, env, input_bytes)
    if check and result.returncode != 0:
        raise CommandFailed(args, result.returncode, result.stderr.decode(errors="replace"))
    return result


def _run_to_completion(args: list[str], cwd: Path | None, env: Mapping[str, str] | None,
                       input_bytes: bytes | None) -> subprocess.CompletedProcess[bytes]:
    with _stdin_holding(input_bytes) as stdin:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    with ledger.held_process(process.pid):
        try:
            out, err = _communicate(process)
        except BaseException:
            stop_process_group(process)
            raise
    return subprocess.CompletedProcess(args, process.returncode, out, err)


@contextmanager
def _stdin_holding(input_bytes: bytes | None) -> Iterator[int | IO[bytes]]:
    """The child's stdin: a file holding the input. communicate() with a timeout
    does not go on writing the input when it is called again after one."""
    if input_bytes is None:
        yield subprocess.DEVNULL
        return
    with tempfile.TemporaryFile() as held:
        held.write(input_bytes)
        held.seek(0)
        yield held


def _communicate(process: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """communicate(), looking at the build's cancel between slices of waiting.

    A command done within the first slice is never cancelled: the quick
    releases (umount, losetup --detach) always finish.
    """
    while True:
        try:
            return process.communicate(timeout=cancel.POLL_SECONDS)
        except subprocess.TimeoutExpired:
            cancel.check()  # the output read so far is kept for the next call


def output_of(argv: Sequence[str | Path], **kwargs: object) -> str:
    """stdout of a successful command, decoded and stripped."""
    return run(argv, **kwargs).stdout.decode().strip()  # type: ignore[arg-type]
