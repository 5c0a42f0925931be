"""The `download:` base: a root tarball fetched once and kept in a cache.

file:// URLs are read where they are; http:// and https:// downloads are
written under a temporary name in the cache folder and renamed in when
complete (and, with `sha256:`, verified), so a later build reuses them. The
size of each download is kept beside it: an entry cut short later (a copy
killed half-way) is fetched again instead of failing the build.
"""

from __future__ import annotations

import errno
import hashlib
import posixpath
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from hotsauce.config import DownloadBase
from hotsauce.errors import CacheFull, ConfigError
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
        reason = _not_usable(entry, base)
        if reason is None:
            emit(Event("info", STAGE, f"served from the cache: {entry}", {"cached": True}))
            return entry
        emit(Event("info", STAGE, f"fetching {base.url} ({reason})", {"cached": False}))
        partial = Cache.temporary_name(entry)
        with ledger.held(ledger.Kind.PATH, partial):
            try:
                _download(base.url, partial, emit)
                _verify(partial, base)
                Cache.write_key(entry, {"url": base.url, "bytes": partial.stat().st_size})
                Cache.publish(partial, entry)
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    raise CacheFull(folder, f"cannot keep the download of {base.url}") from None
                raise
            finally:
                partial.unlink(missing_ok=True)
        return entry


def cached_copy(base: DownloadBase, cache: Cache) -> tuple[Path, str | None]:
    """Where fetch() keeps the download, and why that copy cannot serve a build (None: it can).
    Creates nothing: `hotsauce plan` asks."""
    folder = base.cache_dir or cache.root / "downloads"
    entry = folder / _entry_name(base.url)
    return entry, _not_usable(entry, base)


def _not_usable(entry: Path, base: DownloadBase) -> str | None:
    """Why the cached download cannot serve this build; None when it can."""
    if not entry.is_file():
        return "not in the cache"
    key = Cache.read_key(entry)
    if key is None or key.get("bytes") != entry.stat().st_size:
        return "the cached copy is cut short" if key else "the cached copy's size is not known"
    if base.sha256 is not None and sha256_of(entry) != base.sha256:
        return "cached copy does not match sha256"
    return None


def _entry_name(url: str) -> str:
    """Unique per URL, still readable: a digest of the URL and its file name."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = posixpath.basename(urllib.parse.urlparse(url).path) or "download"
    return f"{digest}-{name}"


def _download(url: str, target: Path, emit: Emit) -> None:
    """Fetch `url` into `target`. Only what the source did is blamed on it: an error writing
    `target` (a full disk) is raised as the OSError it is."""
    with target.open("wb") as out:
        try:
            response = urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS)
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise _unreachable(url, error) from None
        with response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := _read(response, url):
                out.write(chunk)
                done += len(chunk)
                emit(Event("progress", STAGE, "downloading", {"done": done, "total": total}))
        if total and done != total:
            raise ConfigError(f"download.from: {url}: the server sent {done} of {total} bytes")


def _read(response: Any, url: str) -> bytes:
    try:
        return bytes(response.read(1 << 20))
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise _unreachable(url, error) from None


def _unreachable(url: str, error: Exception) -> ConfigError:
    reason = getattr(error, "reason", None) or error
    return ConfigError(f"download.from: {url}: not reachable: {reason}")


def _verify(path: Path, base: DownloadBase) -> None:
    if base.sha256 is not None and sha256_of(path) != base.sha256:
        raise ConfigError(f"download.sha256: {base.url} does not match the sha256 given")
