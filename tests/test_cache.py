"""The cache: whole entries only, one writer per entry, listed with key, size and age."""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import pytest

from hotsauce.commands import cache as cache_command
from hotsauce.store.cache import Cache, default_cache_dir


def publish(cache: Cache, kind: str, name: str, data: bytes, key: dict[str, object]) -> Path:
    with cache.locked(kind, name) as entry:
        partial = Cache.temporary_name(entry)
        partial.write_bytes(data)
        Cache.write_key(entry, key)
        Cache.publish(partial, entry)
    return entry


def run_command(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    parser = argparse.ArgumentParser()
    cache_command.add_command(parser.add_subparsers())
    args = parser.parse_args(["cache", *argv])
    assert args.run(args) == 0
    return capsys.readouterr().out


def test_the_cache_folder_is_hotsauce_cache_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTSAUCE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HOTSAUCE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache/hotsauce"


def test_entries_are_published_whole_with_their_key(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    entry = publish(cache, "bases", "one.tar.zst", b"x" * 1000, {"suite": "bookworm"})
    (cache.folder("bases") / ".two.tar.zst.partial-1").write_bytes(b"half")
    [listed] = cache.entries()
    assert (listed.name, listed.size, listed.key) == (
        "bases/one.tar.zst",
        1000,
        {"suite": "bookworm"},
    )
    assert Cache.read_key(entry) == {"suite": "bookworm"}


def test_a_second_writer_waits_for_the_first_to_publish(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    seen: list[bool] = []

    def second_build() -> None:
        with cache.locked("bases", "one") as entry:
            seen.append(entry.exists())

    with cache.locked("bases", "one") as entry:
        waiting = threading.Thread(target=second_build)
        waiting.start()
        time.sleep(0.3)
        assert seen == []  # still waiting on the lock
        entry.write_text("done")
    waiting.join(timeout=10)
    assert seen == [True]


def test_clear_empties_every_kind_and_says_what_it_freed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = Cache(tmp_path)
    publish(cache, "bases", "one.tar.zst", b"x" * 2048, {"suite": "bookworm"})
    pool = cache.folder("debs") / "amd64"
    pool.mkdir()
    (pool / "curl_8_amd64.deb").write_bytes(b"y" * 1024)
    out = run_command(capsys, "--cache-dir", str(tmp_path), "clear")
    assert "3.0K freed" in out
    assert cache.entries() == []
    assert list((tmp_path / "bases").glob("*.key.json")) == []


def test_list_shows_key_size_and_age_of_each_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTSAUCE_CACHE", str(tmp_path))
    publish(
        Cache(tmp_path),
        "bases",
        "one.tar.zst",
        b"x" * 4096,
        {"suite": "bookworm", "include": ["curl", "vim-tiny"]},
    )
    out = run_command(capsys, "list")
    assert "bases/one.tar.zst" in out
    assert "4.0K" in out
    assert "0s" in out or "1s" in out
    assert "include=curl,vim-tiny; suite=bookworm" in out


def test_list_of_an_empty_cache_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "empty" in run_command(capsys, "--cache-dir", str(tmp_path / "none"), "list")


def test_prune_keeps_the_most_recently_used_entries_of_a_kind(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for age, name in enumerate(["newest", "middle", "oldest"]):
        entry = publish(cache, "modules", name, b"x", {"name": name})
        os.utime(entry, (time.time() - 60 * age, time.time() - 60 * age))
    publish(cache, "bases", "other-kind", b"x", {})
    os.utime(cache.folder("modules") / "oldest", None)  # read just now: recently used

    cache.prune("modules", 2)

    assert sorted(e.name for e in cache.entries()) == ["bases/other-kind", "modules/newest", "modules/oldest"]
    assert not Cache.key_file(cache.folder("modules") / "middle").exists()
