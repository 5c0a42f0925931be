"""Releasing what a build held, and what keeps it from being released.

A mount below a build's folder can be kept busy by what a module left: a
swap file turned on inside the image, a process whose working folder, root
or open files are in it. Those go first (swap off, processes stopped), then
the mounts, deepest first, then the loop devices. The build's own release
path and `hotsauce cleanup` (for the ledgers of builds that did not finish
releasing, see hotsauce.host.ledger) both come here.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from hotsauce.errors import CommandFailed, HotsauceError
from hotsauce.host import ledger, proc
from hotsauce.host.ledger import Holding, Kind, Leftover
from hotsauce.host.mounts import (
    loop_backing,
    loop_devices_backed_below,
    mount_points_below,
    processes_holding,
    swap_files_below,
)

# How long processes keeping a mount busy get between SIGTERM and SIGKILL.
STOP_GRACE_SECONDS = 5.0
# How long the kernel gets to let go of a process that was sent SIGKILL.
KILL_WAIT_SECONDS = 10.0


@contextmanager
def removed_meanwhile(path: Path) -> Iterator[None]:
    """`path` removed in a thread while the body runs: the kernel takes a while to free a
    large file's blocks and cached pages (0.15 s for the reference's 2 GiB raw disk), which the
    body's own work can cover. Joined on the way out; a file it could not remove is left to
    whoever removes its folder."""
    remover = threading.Thread(target=_remove_quietly, args=(path,), name="hotsauce-remove", daemon=True)
    remover.start()
    try:
        yield
    finally:
        remover.join()


def _remove_quietly(path: Path) -> None:
    with suppress(OSError):
        remove(path)


def remove(path: Path) -> None:
    """A file, symlink or folder, whichever `path` is; nothing when there is none."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def free_mount(folder: Path) -> list[str]:
    """Turn off the swap files and stop the processes below `folder`; what was done, as text."""
    done = []
    for swap in swap_files_below(folder):
        proc.run(["swapoff", swap])
        done.append(f"swap file {swap} turned off")
    if stopped := stop_processes_holding(folder):
        done.append(f"processes {', '.join(map(str, stopped))} stopped")
    return done


def stop_processes_holding(folder: Path) -> list[int]:
    """SIGTERM, then SIGKILL, every process keeping something below `folder` busy; waits until
    none does. Returns the pids signalled."""
    return stop_processes_found_by(lambda: processes_holding(folder))


def stop_processes_found_by(find: Callable[[], list[int]], *, graceful: bool = True) -> list[int]:
    """SIGTERM (unless not `graceful`), then SIGKILL, the processes `find()` names, until it names
    none or the stage's wait runs out. Returns the pids signalled.

    `find()` is asked again every moment, and what it names then is signalled too: a process
    can appear after the first look (a child forked meanwhile, a sandbox's inner half)."""
    signalled: list[int] = []
    stages = [(signal.SIGTERM, STOP_GRACE_SECONDS)] if graceful else []
    for sig, wait in [*stages, (signal.SIGKILL, KILL_WAIT_SECONDS)]:
        deadline = time.monotonic() + wait
        while pids := find():
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, sig)
            signalled += [pid for pid in pids if pid not in signalled]
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        else:
            break  # none left
    return signalled


def unmount_below(folder: Path, *, including_itself: bool = True) -> list[str]:
    """Unmount everything at (or only below) `folder`, releasing what keeps it busy first.

    Never lazily: a lazy unmount hides a busy filesystem while it stays alive,
    and with it the loop device under it.
    """
    points = mount_points_below(folder, including_itself=including_itself)
    if not points:
        return []
    done = free_mount(folder)
    for point in points:
        proc.run(["umount", point])
        done.append(f"mount {point}")
    return done


def detach_loops_below(folder: Path) -> list[str]:
    done = []
    for device in loop_devices_backed_below(folder):
        proc.run(["losetup", "--detach", device])
        done.append(f"loop {device}")
    return done


# --- the leftovers of builds (`hotsauce cleanup`) ----------------------------


def release_leftover(leftover: Leftover) -> list[str]:
    """Undo what a build left, newest first; returns what was released.

    Processes go first, whatever their place: a live child can keep a mount
    busy. The ledger is removed only when everything was released.
    """
    released: list[str] = []
    failures: list[str] = []
    ordered = [h for h in leftover.holdings if h.kind is Kind.PROCESS]
    ordered += [h for h in reversed(leftover.holdings) if h.kind is not Kind.PROCESS]
    for holding in ordered:
        try:
            released += _RELEASE[holding.kind](holding)
        except (OSError, HotsauceError) as error:
            failures.append(f"{holding.describe()}: {error}")
    if failures:
        raise HotsauceError("; ".join(failures))
    leftover.ledger.unlink(missing_ok=True)
    return released


def _release_process(holding: Holding) -> list[str]:
    pgid = int(holding.value)
    now = ledger.process_start_time(pgid)
    if now is not None and holding.start_time is not None and now != holding.start_time:
        return []  # the pid was reused, so the group it led is empty
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return []
    return [holding.describe()]


def _release_loop(holding: Holding) -> list[str]:
    device = Path(holding.value)
    if holding.backing is not None and loop_backing(device) != holding.backing:
        return []  # detached already (by the kernel once its mount went), maybe reused since
    # A whole disk's partitions (partx --add) outlive the detach otherwise, and the next user of the device sees them.
    proc.run(["partx", "--delete", device], check=False)
    try:
        proc.run(["losetup", "--detach", device])
    except CommandFailed:
        if loop_backing(device) == holding.backing:
            raise
        return []  # the kernel detached it meanwhile
    return [holding.describe()]


def _release_mount(holding: Holding) -> list[str]:
    return unmount_below(Path(holding.value))


def _release_path(holding: Holding) -> list[str]:
    path = Path(holding.value)
    if not path.exists() and not path.is_symlink():
        return []
    # Anything of the build's still inside (a mount it did not record in time,
    # a loop device over its image) goes first; rmtree must never cross a mount.
    done = unmount_below(path) + detach_loops_below(path)
    if mount_points_below(path):
        raise HotsauceError(f"{path} still has mounts below it; not removed")
    remove(path)
    return [*done, holding.describe()]


_RELEASE = {
    Kind.PROCESS: _release_process,
    Kind.LOOP: _release_loop,
    Kind.MOUNT: _release_mount,
    Kind.PATH: _release_path,
}
