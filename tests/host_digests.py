"""Digests of the host's folders, to show a build left them as they were."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

# Folders a build must leave as they were.
WATCHED = (Path("/etc"), Path("/root"), Path("/usr/local"))


def host_digests() -> dict[str, str]:
    """A digest per watched folder: each entry's name, type, mode, owner, size and mtime; contents too under /etc."""
    digests: dict[str, str] = {}
    for top in WATCHED:
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            digest = hashlib.sha256()
            for name in sorted([*dirs, *files]):
                digest.update(_describe(Path(folder) / name).encode())
            digests[folder] = digest.hexdigest()
    return digests


def changed_folders(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(folder for folder in before.keys() | after.keys() if before.get(folder) != after.get(folder))


def _describe(path: Path) -> str:
    try:
        info = path.lstat()
    except FileNotFoundError:  # gone between the listing and now: its folder's digest shows it
        return f"{path}\0gone\n"
    line = f"{path}\0{info.st_mode:o}\0{info.st_uid}\0{info.st_gid}\0{info.st_size}\0{info.st_mtime_ns}"
    if stat.S_ISLNK(info.st_mode):
        line += "\0" + os.readlink(path)
    elif stat.S_ISREG(info.st_mode) and path.is_relative_to("/etc"):
        line += "\0" + hashlib.sha256(path.read_bytes()).hexdigest()
    return line + "\n"
