"""What a running build holds, written down so a SIGKILLed build can be cleaned up.

A build keeps one small JSON file, `RUN_DIR/<pid>.json`, listing in order
what it took: child process groups, loop devices, mounts, temporary folders
and staging paths. An entry is added as a resource is taken (for mounts and
paths, before it is taken, so a kill half-way still leaves a record) and
removed when it is released; the file goes when the build ends. A file whose
build is no longer running is a leftover: `release_leftovers` undoes it in
reverse order, as the build itself would have.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hotsauce.errors import HotsauceError

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
            self._holdings.pop(token, None)
            self._write()

    def _write(self) -> None:
        with suppress(OSError):  # a full /run must not fail the build; cleanup then just knows less
            self._write_state()

    def _write_state(self) -> None:
        state = {
            "pid": self.pid,
            "start_time": self.start_time,
            "argv": list(self.argv),
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
        ledger.path.unlink(missing_ok=True)


def _own_argv() -> list[str]:
    try:
        return [a for a in Path("/proc/self/cmdline").read_text().split("\0") if a]
    except OSError:
        return []


@contextmanager
def held(
    kind: Kind, value: str | Path, *, backing: str | Path | None = None, start_time: int | None = None
) -> Iterator[None]:
    """Record a holding for the duration of the block (a no-op outside `recording`)."""
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


def remove_tree(path: Path) -> None:
    """rm -rf a temporary folder of ours, refusing to cross a mount (a bind of /dev, say)."""
    if mounts := _mounts_below(path.absolute(), including_itself=True):
        raise HotsauceError(f"{path} still has {mounts[0]} mounted below it; left for `hotsauce cleanup`")
    shutil.rmtree(path, ignore_errors=True)


# --- finding and releasing leftovers -----------------------------------------


def find_leftovers(folder: Path | None = None) -> list[Leftover]:
    """Ledgers of builds that are no longer running, oldest first."""
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
        if is_running(pid, start_time):
            continue
        leftovers.append(Leftover(path, pid, tuple(state.get("argv", [])), holdings))
    return leftovers


def _holding_from_json(data: dict[str, Any]) -> Holding:
    return Holding(Kind(data["kind"]), str(data["value"]), data.get("backing"), data.get("start_time"))


def release_leftover(leftover: Leftover) -> list[str]:
    """Undo what a dead build held, newest first; returns what was released.

    Processes go first, whatever their place: a live child can keep a mount
    busy. The ledger is removed only when everything was released.
    """
    released: list[str] = []
    failures: list[str] = []
    ordered = [h for h in leftover.holdings if h.kind is Kind.PROCESS]
    ordered += [h for h in reversed(leftover.holdings) if h.kind is not Kind.PROCESS]
    for holding in ordered:
        try:
            if _RELEASE[holding.kind](holding):
                released.append(holding.describe())
        except (OSError, RuntimeError, HotsauceError) as error:
            failures.append(f"{holding.describe()}: {error}")
    if failures:
        raise RuntimeError("; ".join(failures))
    leftover.ledger.unlink(missing_ok=True)
    return released


def _release_process(holding: Holding) -> bool:
    pgid = int(holding.value)
    now = process_start_time(pgid)
    if now is not None and holding.start_time is not None and now != holding.start_time:
        return False  # the pid was reused, so the group it led is empty
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _release_loop(holding: Holding) -> bool:
    device = Path(holding.value)
    if holding.backing is not None and _loop_backing(device) != holding.backing:
        return False  # detached already, maybe reused by someone else since
    # A whole disk's partitions (partx --add) outlive the detach otherwise, and the next user of the device sees them.
    _run(["partx", "--delete", str(device)], check=False)
    _run(["losetup", "--detach", str(device)])
    return True


def _loop_backing(device: Path) -> str | None:
    try:
        return Path(f"/sys/block/{device.name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def _release_mount(holding: Holding) -> bool:
    return _unmount_below(Path(holding.value), including_itself=True)


def _release_path(holding: Holding) -> bool:
    path = Path(holding.value)
    if not path.exists() and not path.is_symlink():
        return False
    # Anything of the build's still inside (a mount it did not record in time,
    # a loop device over its image) goes first; rmtree must never cross a mount.
    _unmount_below(path, including_itself=True)
    _detach_loops_below(path)
    if _mounts_below(path, including_itself=True):
        raise RuntimeError(f"{path} still has mounts below it; not removed")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return True


def _mounts_below(path: Path, *, including_itself: bool) -> list[Path]:
    """Mount points at or below `path`, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = Path(line.split()[4].encode().decode("unicode_escape"))
            if (including_itself and point == path) or path in point.parents:
                found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _unmount_below(path: Path, *, including_itself: bool) -> bool:
    points = _mounts_below(path, including_itself=including_itself)
    for point in points:
        if _run(["umount", str(point)], check=False) != 0:
            _run(["umount", "--lazy", str(point)])
    return bool(points)


def _detach_loops_below(path: Path) -> None:
    for backing_file in Path("/sys/block").glob("loop*/loop/backing_file"):
        with suppress(OSError):
            backing = Path(backing_file.read_text().strip())
            if path == backing or path in backing.parents:
                _run(["losetup", "--detach", f"/dev/{backing_file.parent.parent.name}"])


def _run(argv: list[str], *, check: bool = True) -> int:
    from hotsauce.host import proc  # proc records into the ledger: import here, not at the top

    return proc.run(argv, check=check).returncode


_RELEASE = {
    Kind.PROCESS: _release_process,
    Kind.LOOP: _release_loop,
    Kind.MOUNT: _release_mount,
    Kind.PATH: _release_path,
}
