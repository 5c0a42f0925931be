"""What a build leaves in the root that differs from one build to the next.

Runs after `identity.scrub_image`, once nothing more is written: the logs
are emptied (kept as files, their owners and modes as the packages made
them), caches that are made again on demand go, with Ansible's and the
build's temporary files and systemd's random seed; then no file time is
later than the epoch. Python bytecode stays: Debian compiles it when a
package is installed, from sources whose times the package fixes, and
two builds were found to make the same bytes.

Every path is resolved through hotsauce.rootpath, so a symlink in the image
never leads a removal to the build host.
"""

from __future__ import annotations

import os
from pathlib import Path

from hotsauce import rootpath
from hotsauce.host.release import remove

# Emptied, not removed: daemons expect their log files to exist.
LOG_FOLDER = "/var/log"
# Made again by the tools that use them, and not the same twice.
REMOVED = (
    "/var/cache/ldconfig/aux-cache",
    "/var/lib/systemd/random-seed",
    "/root/.ansible",
    "/root/.cache",
    "/var/cache/debconf/config.dat-old",
    "/var/cache/debconf/templates.dat-old",
    "/var/lib/dpkg/status-old",
    "/var/lib/dpkg/diversions-old",
    "/var/lib/dpkg/statoverride-old",
)
EMPTIED_FOLDERS = ("/tmp", "/var/tmp")


def scrub_build_leftovers(root: Path) -> None:
    """Logs emptied; caches, temporary files and the random seed gone."""
    _empty_logs(root)
    for path in REMOVED:
        target = rootpath.parent_inside(root, path)
        if target.is_symlink() or target.exists():
            remove(target)
    for folder in EMPTIED_FOLDERS:
        _empty_folder(root, folder)


def clamp_times(root: Path, epoch: int) -> int:
    """No time in the tree later than the epoch; access times equal to modification times.

    Returns how many entries changed. Symlinks are changed themselves, never followed. Each
    folder's entries are read and changed through the folder's descriptor, before the folder
    itself: no path is built or looked up again (the reference root's 14,000 entries took
    0.145 s by path and take 0.095 s so).
    """
    limit = epoch * 1_000_000_000
    folder = os.open(root, _FOLDER_FLAGS)
    try:
        changed = _clamp_folder(folder, limit)
    finally:
        os.close(folder)
    return changed + _clamp(os.lstat(root), limit, str(root), None)


_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _clamp_folder(folder: int, limit: int) -> int:
    changed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                inner = os.open(entry.name, _FOLDER_FLAGS, dir_fd=folder)
                try:
                    changed += _clamp_folder(inner, limit)
                finally:
                    os.close(inner)
            changed += _clamp(entry.stat(follow_symlinks=False), limit, entry.name, folder)
    return changed


def _clamp(stat: os.stat_result, limit: int, name: str, folder: int | None) -> int:
    mtime = min(stat.st_mtime_ns, limit)
    if stat.st_mtime_ns == mtime and stat.st_atime_ns == mtime:
        return 0
    os.utime(name, ns=(mtime, mtime), dir_fd=folder, follow_symlinks=False)
    return 1


def _empty_logs(root: Path) -> None:
    logs = rootpath.inside(root, LOG_FOLDER)
    if not logs.is_dir() or logs.is_symlink():
        return
    for folder, _, files in os.walk(logs):
        for name in files:
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                continue
            if name.endswith((".gz", ".xz", ".old", ".journal", ".journal~")) or _rotated(name):
                path.unlink()  # rotated logs, and journald's files (an empty one is a broken one)
            else:
                os.truncate(path, 0)


def _rotated(name: str) -> bool:
    """dpkg.log.1, syslog.2: what logrotate leaves behind."""
    stem, _, suffix = name.rpartition(".")
    return bool(stem) and suffix.isdigit()


def _empty_folder(root: Path, path: str) -> None:
    folder = rootpath.inside(root, path)
    if folder.is_dir() and not folder.is_symlink():
        for entry in folder.iterdir():
            remove(entry)
