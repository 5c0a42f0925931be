"""The cache folder: downloads, bootstrapped bases, Galaxy roles.

Entries are written under a temporary name and renamed into place, so a
reader never sees half an entry; a per-entry lock makes a second build wait
for an entry the first is creating instead of creating it twice.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotsauce.host.release import remove

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

    # --- describing and emptying the cache (`hotsauce cache list|clear`) ---

    @staticmethod
    def key_file(entry: Path) -> Path:
        """The sidecar that says what an entry was made from (shown by `cache list`)."""
        return entry.with_name(f"{entry.name}{KEY_SUFFIX}")

    @classmethod
    def write_key(cls, entry: Path, key: Mapping[str, Any]) -> None:
        """Record the key of `entry`; written under a temporary name like the entry itself."""
        sidecar = cls.key_file(entry)
        partial = cls.temporary_name(sidecar)
        partial.write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
        cls.publish(partial, sidecar)

    @classmethod
    def read_key(cls, entry: Path) -> dict[str, Any] | None:
        try:
            key = json.loads(cls.key_file(entry).read_text())
        except (OSError, ValueError):
            return None
        return key if isinstance(key, dict) else None

    def entries(self, kind: str | None = None) -> list[CacheEntry]:
        """The published entries (of one kind, or all), oldest first."""
        if not self.root.is_dir():
            return []
        kinds = [kind] if kind else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        found = []
        for each_kind in kinds:
            folder = self.root / each_kind
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".") or path.name.endswith(KEY_SUFFIX):
                    continue  # locks, partial writes and sidecars are not entries
                found.append(
                    CacheEntry(each_kind, path, self.read_key(path), _size_of(path), _mtime(path))
                )
        return sorted(found, key=lambda entry: entry.modified)

    def clear(self) -> int:
        """Remove every entry of every kind; returns the bytes freed.

        Lock files stay: a build holding one keeps a valid lock, and the
        entry it is writing is published after the clear, complete.
        """
        freed = 0
        for entry in self.entries():
            freed += entry.size
            remove(entry.path)
            remove(self.key_file(entry.path))
        return freed

    def prune(self, kind: str, keep: int) -> None:
        """Keep the `keep` most recently used entries of `kind` (a reader touches what it uses);
        each other one is removed under its lock, so no build loses an entry it is reading."""
        for old in self.entries(kind)[:-keep]:
            with self.locked(kind, old.path.name) as entry:
                remove(entry)
                remove(self.key_file(entry))


KEY_SUFFIX = ".key.json"


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    path: Path
    key: dict[str, Any] | None  # what the entry was made from, when recorded
    size: int  # bytes on disk
    modified: float  # seconds since the epoch

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.path.name}"


def _size_of(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path):
        total += sum((Path(folder) / name).lstat().st_size for name in files)
    return total


def _mtime(path: Path) -> float:
    return path.lstat().st_mtime
