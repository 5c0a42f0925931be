"""The `download:` base: a root tarball fetched once and kept in a cache.

file:// URLs are read where they are; http:// and https:// downloads are
written under a temporary name in the cache folder and renamed in when
complete (and, with `sha256:`, verified), so a later build reuses them.
"""

from __future__ import annotations

import hashlib
import posixpath
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from hotsauce.config import DownloadBase
from hotsauce.errors import ConfigError
from hotsauce.events import Emit, Event
from hotsauce.host import ledger
from hotsauce.output.imageset import sha256_of
from hotsauce.store.cache import Cache

STAGE = "download"
_TIMEOUT_SECONDS = 60


def fetch(base: DownloadBase, cache: Cache, emit: Emit, *, scratch: Path | None = None) -> Path:
    """The local path of the base's archive, downloading it only when not cached.

    With the cache disabled, the download goes to `scratch` (a folder of the
    build's own, removed with it) and no cache is read or written.
    """
    if base.url.startswith("file://"):
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(base.url).path))
        if not path.is_file():
            raise ConfigError(f"download.from: {base.url}: no such file")
        emit(Event("info", STAGE, f"reading {path} in place (file:// is never copied)"))
        _verify(path, base)
        return path
    if not cache.enabled:
        if scratch is None:
            raise ValueError("a download without the cache needs a scratch folder")
        target = scratch / _entry_name(base.url)
        emit(Event("info", STAGE, f"fetching {base.url} (the cache is disabled)", {"cached": False}))
        _download(base.url, target, emit)
        _verify(target, base)
        return target
    folder = base.cache_dir or cache.folder("downloads")
    folder.mkdir(parents=True, exist_ok=True)
    cache_for_downloads = Cache(folder.parent)
    with cache_for_downloads.locked(folder.name, _entry_name(base.url)) as entry:
        if entry.is_file() and (base.sha256 is None or sha256_of(entry) == base.sha256):
            emit(Event("info", STAGE, f"served from the cache: {entry}", {"cached": True}))
            return entry
        reason = "not in the cache" if not entry.exists() else "cached copy does not match sha256"
        emit(Event("info", STAGE, f"fetching {base.url} ({reason})", {"cached": False}))
        partial = Cache.temporary_name(entry)
        with ledger.held(ledger.Kind.PATH, partial):
            try:
                _download(base.url, partial, emit)
                _verify(partial, base)
                Cache.publish(partial, entry)
            finally:
                partial.unlink(missing_ok=True)
        return entry


def _entry_name(url: str) -> str:
    """Unique per URL, still readable: a digest of the URL and its file name."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = posixpath.basename(urllib.parse.urlparse(url).path) or "download"
    return f"{digest}-{name}"


def _download(url: str, target: Path, emit: Emit) -> None:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response, target.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                emit(Event("progress", STAGE, "downloading", {"done": done, "total": total}))
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ConfigError(f"download.from: {url}: not reachable: {reason}") from None


def _verify(path: Path, base: DownloadBase) -> None:
    if base.sha256 is not None and sha256_of(path) != base.sha256:
        raise ConfigError(f"download.sha256: {base.url} does not match the sha256 given")
