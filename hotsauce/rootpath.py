"""Paths inside the image root, resolved as if the root were `/` (stand-in; the base work replaces it)."""

from __future__ import annotations

import os
from pathlib import Path

from hotsauce.errors import HotsauceError


def inside(root: str | Path, path: str | Path) -> Path:
    root = Path(root)
    parts = [p for p in str(path).split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise HotsauceError(f"{path}: too many symlinks inside {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)
