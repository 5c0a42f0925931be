"""download: a root tarball over HTTP, fetched once into the cache, or afresh without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hotsauce.bases import download
from hotsauce.config import DownloadBase
from hotsauce.errors import CacheFull
from hotsauce.events import Event
from hotsauce.store.cache import Cache
from tests.faults.projects import tiny_root_tarball, write_project
from tests.filesystems import small_tmpfs
from tests.http_server import ServedFolder, serving
from tests.images import run_hotsauce

ROOT_BYTES = b"a root tarball, as far as this test cares\n" * 4096


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedFolder]:
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "root.tar").write_bytes(ROOT_BYTES)
    with serving(folder) as server:
        yield server


def fetch(url: str, cache: Cache, scratch: Path | None = None) -> tuple[Path, list[Event]]:
    events: list[Event] = []
    return download.fetch(DownloadBase(url), cache, events.append, scratch=scratch), events


def test_a_download_is_fetched_once_and_then_served_from_the_cache(tmp_path: Path, served: ServedFolder) -> None:
    cache = Cache(tmp_path / "cache")
    first, _ = fetch(f"{served.url}/root.tar", cache)
    second, events = fetch(f"{served.url}/root.tar", cache)
    assert first == second and second.read_bytes() == ROOT_BYTES
    assert served.requests == ["/root.tar"]
    assert events[-1].data == {"cached": True}


def test_without_the_cache_a_download_is_fetched_every_time_and_the_cache_is_untouched(
    tmp_path: Path, served: ServedFolder
) -> None:
    fetch(f"{served.url}/root.tar", Cache(tmp_path / "cache"))
    cached = sorted((tmp_path / "cache").rglob("*"))
    disabled = Cache(tmp_path / "cache", enabled=False)
    for build in ("one", "two"):
        scratch = tmp_path / build
        scratch.mkdir()
        path, _ = fetch(f"{served.url}/root.tar", disabled, scratch)
        assert path.is_relative_to(scratch) and path.read_bytes() == ROOT_BYTES
    assert served.requests == ["/root.tar"] * 3
    assert sorted((tmp_path / "cache").rglob("*")) == cached


@pytest.mark.integration
def test_a_build_with_no_cache_downloads_its_base_each_time_and_keeps_nothing(tmp_path: Path) -> None:
    served_folder = tmp_path / "served"
    served_folder.mkdir()
    tiny_root_tarball(served_folder / "tiny.tar")
    with serving(served_folder) as server:
        project = write_project(tmp_path / "project", f"{server.url}/tiny.tar", [])
        for output in ("one", "two"):
            result = run_hotsauce("build", "-s", "128M", "-o", output, "--no-cache", "--cache-dir", tmp_path / "cache",
                                  cwd=project)
            assert result.returncode == 0, result.stderr
    assert server.requests == ["/tiny.tar", "/tiny.tar"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["logs"]


def test_a_cached_download_cut_short_is_fetched_again(tmp_path: Path, served: ServedFolder) -> None:
    cache = Cache(tmp_path / "cache")
    entry, _ = fetch(f"{served.url}/root.tar", cache)
    with entry.open("r+b") as cut:
        cut.truncate(len(ROOT_BYTES) // 3)  # as a copy killed half-way leaves it

    again, events = fetch(f"{served.url}/root.tar", cache)

    assert again.read_bytes() == ROOT_BYTES
    assert served.requests == ["/root.tar", "/root.tar"]
    assert any("cut short" in event.message for event in events)


@pytest.mark.integration
def test_a_download_into_a_full_cache_says_the_cache_is_full_not_that_the_source_is_unreachable(
    tmp_path: Path, served: ServedFolder
) -> None:
    (tmp_path / "served" / "big.tar").write_bytes(ROOT_BYTES * 4)  # 688K, more than the cache holds
    with small_tmpfs(tmp_path / "cache", "256k") as folder:
        with pytest.raises(CacheFull) as raised:
            fetch(f"{served.url}/big.tar", Cache(folder))
        assert [p.name for p in (folder / "downloads").iterdir() if not p.name.endswith(".lock")] == []
    message = str(raised.value)
    assert f"the cache folder {folder / 'downloads'} is full" in message and "not reachable" not in message
