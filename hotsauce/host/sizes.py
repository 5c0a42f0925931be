"""Sizes as qemu-img reads them: 512M, 4G, 1.5G, 4096 (bytes)."""

from __future__ import annotations

import re

from hotsauce.errors import ConfigError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str, *, what: str = "--size") -> int:
    """Bytes for a size such as '4G'; ConfigError naming `what` when unreadable."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{what}: cannot read size {text!r} (expected e.g. 512M, 4G, 1.5G)")
    number, unit = match.groups()
    size = int(float(number) * _UNITS[unit.lower()])
    if size <= 0:
        raise ConfigError(f"{what}: size must be positive, got {text!r}")
    return size


def human_size(size: int) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")
