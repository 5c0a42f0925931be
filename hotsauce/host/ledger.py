"""What a running build holds, written down so a SIGKILLed build can be cleaned up.

A build keeps one small JSON file, `RUN_DIR/<pid>.json`, listing in order
what it took: child process groups, loop devices, mounts, temporary folders
and staging paths. An entry is added as a resource is taken (for mounts and
paths, before it is taken, so a kill half-way still leaves a record) and
removed when it is really released: a mount that is still mounted, a loop
device still attached or a path still there stays recorded, whatever the
code that held it believed. The file goes when the build ends holding
nothing; otherwise it stays, marked ended, under a name of its own. A file
whose build ended or is no longer running is a leftover:
hotsauce.host.release undoes it in reverse order, as the build would have.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hotsauce.errors import HotsauceError
from hotsauce.host.mounts import is_mount_point, loop_backing, mount_points_below

RUN_DIR_ENV = "HOTSAUCE_RUN_DIR"
DEFAULT_RUN_DIR = Path("/run/hotsauce")


class Kind(StrEnum):
    PROCESS = "process"  # a child's process group; value is the pgid
    LOOP = "loop"  # a loop device; backing is the file behind it
    MOUNT = "mount"  # a mount point; everything mounted below it goes too
    PATH = "path"  # a temporary file or folder


@dataclass(frozen=True)
class Holding:
    kind: Kind
    value: str
    backing: str | None = None  # LOOP: the image file, to never detach someone else's device
    start_time: int | None = None  # PROCESS: to never signal a reused pid

    def describe(self) -> str:
        return f"{self.kind} {self.value}" + (f" ({self.backing})" if self.backing else "")

    def still_held(self) -> bool:
        """Whether the resource is still there after the code holding it let go.

        A process group counts as gone: proc reaps its children before letting go.
        """
        path = Path(self.value)
        if self.kind is Kind.MOUNT:
            return is_mount_point(path)
        if self.kind is Kind.LOOP:
            backing = loop_backing(path)
            return backing is not None and self.backing in (None, backing)
        if self.kind is Kind.PATH:
            return path.exists() or path.is_symlink()
        return False


@dataclass(frozen=True)
class Leftover:
    """What a build that is no longer running still held."""

    ledger: Path
    pid: int
    argv: tuple[str, ...]
    holdings: tuple[Holding, ...]


def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_running(pid: int, start_time: int | None) -> bool:
    now = process_start_time(pid)
    return now is not None and (start_time is None or now == start_time)


@dataclass
class Ledger:
    path: Path
    pid: int
    start_time: int | None
    argv: tuple[str, ...]
    _holdings: dict[int, Holding] = field(default_factory=dict)
    _next: int = 0
    ended: bool = False  # the build is over; what is still recorded is left for `hotsauce cleanup`
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, holding: Holding) -> int:
        with self._lock:
            token = self._next
            self._next += 1
            self._holdings[token] = holding
            self._write()
        return token

    def release(self, token: int) -> None:
        with self._lock:
            holding = self._holdings.get(token)
            if holding is not None and not holding.still_held():
                del self._holdings[token]
                self._write()

    def end(self) -> None:
        """The build is over: its ledger goes, or stays for `hotsauce cleanup` with what is left.

        Renamed, so a later build of this same process (a library caller) starts a ledger of its own.
        """
        with self._lock:
            if not self._holdings:
                self.path.unlink(missing_ok=True)
                return
            self.ended = True
            self._write()
            with suppress(OSError):
                os.replace(self.path, self.path.with_name(f"{self.pid}-ended-{time.time_ns()}.json"))

    def _write(self) -> None:
        with suppress(OSError):  # a full /run must not fail the build; cleanup then just knows less
            self._write_state()

    def _write_state(self) -> None:
        state = {
            "pid": self.pid,
            "start_time": self.start_time,
            "argv": list(self.argv),
            "ended": self.ended,
            "holdings": [_holding_to_json(h) for _, h in sorted(self._holdings.items())],
        }
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps(state, indent=1))
        os.replace(partial, self.path)  # a reader never sees half a ledger


def _holding_to_json(holding: Holding) -> dict[str, Any]:
    return {k: v for k, v in vars(holding).items() if v is not None}


_active: Ledger | None = None


@contextmanager
def recording(folder: Path | None = None) -> Iterator[Ledger | None]:
    """Keep this process's ledger while the block runs; what `held` records goes in it.

    Without a writable run folder the build still runs, unrecorded.
    """
    global _active
    if _active is not None:  # a build inside a build (a library caller): one ledger
        yield _active
        return
    folder = folder or run_dir()
    pid = os.getpid()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        ledger = Ledger(folder / f"{pid}.json", pid, process_start_time(pid), tuple(_own_argv()))
        ledger._write_state()
    except OSError:
        yield None
        return
    _active = ledger
    try:
        yield ledger
    finally:
        _active = None
        ledger.end()


def _own_argv() -> list[str]:
    try:
        return [a for a in Path("/proc/self/cmdline").read_text().split("\0") if a]
    except OSError:
        return []


@contextmanager
def held(
    kind: Kind, value: str | Path, *, backing: str | Path | None = None, start_time: int | None = None
) -> Iterator[None]:
    """Record a holding for the duration of the block, and after it while the resource is
    still there (a no-op outside `recording`)."""
    ledger = _active
    if ledger is None:
        yield
        return
    holding = Holding(kind, str(value), str(backing) if backing is not None else None, start_time)
    token = ledger.hold(holding)
    try:
        yield
    finally:
        ledger.release(token)


@contextmanager
def held_process(pid: int) -> Iterator[None]:
    with held(Kind.PROCESS, str(pid), start_time=process_start_time(pid)):
        yield


@contextmanager
def temporary_folder(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A new temporary folder (in `parent`, default $TMPDIR) for the block, removed after it, and
    recorded meanwhile so that `hotsauce cleanup` removes it after a SIGKILL."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent)).absolute()
    with held(Kind.PATH, folder):
        try:
            yield folder
        finally:
            remove_tree(folder)


def remove_tree(path: Path) -> None:
    """rm -rf a temporary folder of ours, refusing to cross a mount (a bind of /dev, say)."""
    if mounts := mount_points_below(path.absolute()):
        raise HotsauceError(f"{path} still has {mounts[0]} mounted below it; left for `hotsauce cleanup`")
    shutil.rmtree(path, ignore_errors=True)


# --- finding leftovers ---------------------------------------------------------


def find_leftovers(folder: Path | None = None) -> list[Leftover]:
    """Ledgers of builds that ended or are no longer running, oldest first."""
    folder = folder or run_dir()
    if not folder.is_dir():
        return []
    leftovers = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            state = json.loads(path.read_text())
            pid, start_time = int(state["pid"]), state.get("start_time")
            holdings = tuple(_holding_from_json(h) for h in state.get("holdings", []))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a ledger, or one that vanished while we read it
        if not state.get("ended") and is_running(pid, start_time):
            continue
        leftovers.append(Leftover(path, pid, tuple(state.get("argv", [])), holdings))
    return leftovers


def _holding_from_json(data: dict[str, Any]) -> Holding:
    return Holding(Kind(data["kind"]), str(data["value"]), data.get("backing"), data.get("start_time"))
