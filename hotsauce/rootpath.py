"""Paths inside an image, resolved as the image itself would see them.

An image's symlinks are meant for the image: `/etc/resolv.conf ->
/run/systemd/resolve/stub-resolv.conf` names a file of the image, not of
the build host. Following such a link with plain `open()` from outside would
write the build host's file, so every path hotsauce writes inside a root is
resolved here first, the way the kernel resolves it after `chroot ROOT`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from hotsauce.errors import PathEscapes

# What Python modules use; PathEscapes stays importable from here for them.
__all__ = ["PathEscapes", "inside", "parent_inside", "remove", "symlink", "write_file"]

# The kernel gives up after 40 links in one lookup; an image cannot expect more.
MAX_SYMLINKS = 40


def inside(root: Path, path: str | Path) -> Path:
    """`path` resolved as if `root` were `/`, as a host path under `root`.

    Symlinks of the image are followed within the image: an absolute target
    starts again at `root`, and `..` stops at `root`, as it does in a chroot,
    so the result never leaves `root`. Components that do not exist yet are
    kept as they are (the caller may be about to create them).
    """
    root = Path(os.path.abspath(root))
    pending = list(PurePosixPath("/", path).parts[1:])
    pending.reverse()  # a stack: the next component to resolve is last
    resolved: list[str] = []
    links_followed = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if not candidate.is_symlink():
            resolved.append(part)
            continue
        links_followed += 1
        if links_followed > MAX_SYMLINKS:
            raise PathEscapes(f"{root}: too many levels of symbolic links resolving {path}")
        target = PurePosixPath(os.readlink(candidate))
        if target.is_absolute():
            resolved = []
        pending.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
    result = root.joinpath(*resolved)
    if result != root and root not in result.parents:
        raise PathEscapes(f"{root}: {path} resolves outside the image")  # cannot happen; be sure
    return result


def parent_inside(root: Path, path: str | Path) -> Path:
    """Where to create `path` itself: its folder resolved in the image, its last name kept.

    Used to replace a file: a symlink in the last place is replaced, not followed.
    """
    pure = PurePosixPath("/", path)
    return inside(root, str(pure.parent)) / pure.name


def write_file(root: Path, path: str | Path, text: str, mode: int = 0o644) -> Path:
    """Replace the image's file `path` by a regular file holding `text`."""
    target = _cleared_place(root, path)
    target.write_text(text)
    target.chmod(mode)
    return target


def remove(root: Path, path: str | Path) -> None:
    """Remove the image's entry `path` (a symlink itself, not what it names); absent is fine."""
    target = parent_inside(root, path)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        raise PathEscapes(f"{root}: {path} is a folder, expected a file")


def symlink(root: Path, path: str | Path, target: str) -> None:
    """Make the image's `path` a symlink to `target` (a path as the image sees it)."""
    _cleared_place(root, path).symlink_to(target)


def _cleared_place(root: Path, path: str | Path) -> Path:
    """Where to create the image's `path`: its folder made, the file or symlink there removed."""
    place = parent_inside(root, path)
    place.parent.mkdir(parents=True, exist_ok=True)
    if place.is_symlink() or place.exists():
        remove(root, path)
    return place
