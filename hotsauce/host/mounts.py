"""What lies below a folder on this host: mount points, swap files, loop devices, and the
processes that keep them busy.

Read from /proc and /sys only and never acted on, so the ledger can ask
without running a command (hotsauce.host.release acts on the answers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

# The kernel writes a space, tab, newline or backslash in a path as a 3-digit octal escape.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def is_below(path: Path, folder: Path) -> bool:
    """`path` is `folder` or lies inside it."""
    return path == folder or folder in path.parents


def mount_points_below(folder: Path, *, including_itself: bool = True) -> list[Path]:
    """Mount points at or below `folder`, deepest first (the order to unmount them in)."""
    found = set()
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = Path(_unescape(line.split()[4]))
            if (including_itself and point == folder) or folder in point.parents:
                found.add(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def is_mount_point(path: Path) -> bool:
    return path in mount_points_below(path)


def is_mounted_from(device: Path) -> bool:
    """Whether a filesystem on `device`, or on one of its partitions (loop0p1), is mounted."""
    name = str(device)
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            source = _unescape(line.split(" - ", 1)[1].split()[1])
            if source == name or (source.startswith(f"{name}p") and source[len(name) + 1:].isdigit()):
                return True
    return False


def swap_files_below(folder: Path) -> list[Path]:
    """Swap files in use that lie below `folder` (a module's `swapon` inside an image)."""
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if fields and fields[1] == "file" and is_below(Path(_unescape(fields[0])), folder):
            found.append(Path(_unescape(fields[0])))
    return found


def loop_backing(device: Path) -> str | None:
    """The file behind loop device `device`; None when it is not attached."""
    try:
        return Path(f"/sys/block/{device.name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def loop_devices_backed_below(folder: Path) -> list[Path]:
    found = []
    for backing_file in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            backing = Path(backing_file.read_text().strip())
        except OSError:
            continue  # detached while we looked
        if is_below(backing, folder):
            found.append(Path("/dev") / backing_file.parent.parent.name)
    return found


def processes_holding(folder: Path) -> list[int]:
    """Processes (other than this one) whose root, working folder, program, open files or
    mapped files lie below `folder`: each keeps a mount there busy."""
    return [pid for pid in _other_pids() if any(is_below(p, folder) for p in _paths_used_by(pid))]


def _other_pids() -> Iterator[int]:
    own = os.getpid()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != own:
            yield int(entry.name)


def _paths_used_by(pid: int) -> Iterator[Path]:
    base = f"/proc/{pid}"
    links = [f"{base}/root", f"{base}/cwd", f"{base}/exe"]
    with suppress(OSError):  # gone, or a kernel thread
        links += [f"{base}/fd/{fd}" for fd in os.listdir(f"{base}/fd")]
    for link in links:
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if target.startswith("/"):  # not socket:[...], pipe:[...], anon_inode:...
            yield Path(target.removesuffix(" (deleted)"))
    try:
        with open(f"{base}/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith("/"):
                    yield Path(fields[5].rstrip("\n").removesuffix(" (deleted)"))
    except OSError:
        return
