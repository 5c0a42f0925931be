"""Snapshots of a root as tar.zst cache entries: a Debian base, the root after some module runs.

A snapshot keeps owners by number, permissions, ACLs and extended attributes
(file capabilities such as ping's live there), and is published only once
complete. One that was cut short anyway (a copy killed half-way, a disk that
filled under an older hotsauce) is found when it is read: it is thrown away,
the root is emptied again, and the caller makes the root afresh.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hotsauce.errors import CacheFull, CommandFailed
from hotsauce.host.proc import run
from hotsauce.host.release import remove
from hotsauce.store.cache import Cache

# ACLs travel as the raw xattrs they are (system.posix_acl_*), with the other xattrs, not through
# tar's --acls: that sets an ACL on every file it unpacks, one the mode already says for nearly all
# (12,343 setxattr and 1,422 removexattr calls for the reference root, about 0.4 s of its 1.6 s).
_TAR_KEEP = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]
# 128 KiB records instead of tar's 10 KiB: ten times fewer reads and writes for the same bytes.
_RECORD = "--blocking-factor=256"
# In the keys of every snapshot entry (bases, module runs): bumped when an entry's format changes, so
# an older one is made again rather than read the wrong way (2: ACLs as xattrs; 1 kept them in
# tar's own ACL records, which an unpack without --acls would drop).
FORMAT = 2
# zstd's level 1, not its default 3: a cold build waits for two archives (the base, a module run).
# This tar | zstd on the reference base (492 MB of tar), two cores, three rounds alternating:
# level 3 took 2.87-3.14 s for 166 MB, level 1 2.26-2.47 s for 185 MB. Unpacking is no slower.
_COMPRESS = "--use-compress-program=zstd -T0 -1"
# What stays in a root that is emptied again: the filesystem's own folder.
_KEEP_IN_ROOT = {"lost+found"}


def store(root: Path, entry: Path, key: Mapping[str, Any]) -> None:
    """Archive `root` as the cache entry `entry`, published only once complete."""
    partial = Cache.temporary_name(entry)
    try:
        run(["tar", "--create", "--file", partial, _COMPRESS, _RECORD, *_TAR_KEEP,
             "--sparse", "--exclude=./lost+found", "-C", root, "."])
        Cache.write_key(entry, key)
        Cache.publish(partial, entry)
    except (CommandFailed, OSError) as error:
        if _is_full(error, entry.parent):
            raise CacheFull(entry.parent, f"cannot keep {entry.name}") from None
        raise
    finally:
        partial.unlink(missing_ok=True)


def unpack(entry: Path, root: Path) -> bool:
    """Unpack `entry` into `root`; False when the entry was cut short (it is removed and
    `root` emptied again), so the caller makes the root afresh."""
    try:
        run(["tar", "--extract", "--file", entry, "--use-compress-program=zstd -T0", _RECORD, *_TAR_KEEP,
             "--preserve-permissions", "-C", root])
    except CommandFailed:
        if is_whole(entry):
            raise  # the entry is fine: the failure is the root's (a full image, say)
        discard(entry)
        empty_root(root)
        return False
    return True


def is_whole(entry: Path) -> bool:
    """zstd's own check: every frame complete and its checksum right."""
    return run(["zstd", "--test", "--quiet", entry], check=False).returncode == 0


def discard(entry: Path) -> None:
    remove(entry)
    remove(Cache.key_file(entry))


def empty_root(root: Path) -> None:
    for child in root.iterdir():
        if child.name not in _KEEP_IN_ROOT:
            remove(child)


def _is_full(error: CommandFailed | OSError, folder: Path) -> bool:
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    if os.strerror(errno.ENOSPC) in error.stderr:
        return True
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize < (1 << 20)
