"""The cache folder: downloads, bootstrapped bases, Galaxy roles.

Entries are written under a temporary name and renamed into place, so a
reader never sees half an entry; a per-entry lock makes a second build wait
for an entry the first is creating instead of creating it twice.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "HOTSAUCE_CACHE"


def default_cache_dir() -> Path:
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser().absolute()
    return Path("~/.cache/hotsauce").expanduser()


@dataclass(frozen=True)
class Cache:
    root: Path
    enabled: bool = True

    def folder(self, kind: str) -> Path:
        """The folder of one kind of entry (downloads, bases, ...), created on demand."""
        path = self.root / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def locked(self, kind: str, name: str) -> Iterator[Path]:
        """Hold the lock of entry `name` while creating or reading it; yields its path."""
        folder = self.folder(kind)
        lock_path = folder / f".{name}.lock"
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield folder / name
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    @staticmethod
    def temporary_name(entry: Path) -> Path:
        """Where to write an entry before publishing it (same folder, so rename is atomic)."""
        return entry.with_name(f".{entry.name}.partial-{os.getpid()}")

    @staticmethod
    def publish(partial: Path, entry: Path) -> None:
        os.replace(partial, entry)
