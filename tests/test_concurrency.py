"""Two builds at once, from different build.yamls sharing one cache, both succeed.

The download cache entry is created once: the second build waits on its lock
and then reads the finished entry, never half of it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hotsauce.output.imageset import verify_set
from tests.faults.running import hotsauce_env
from tests.http_server import serving

pytestmark = pytest.mark.integration


def start_build(project: Path, output: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hotsauce", "build", "-s", "2G", "-o", str(output), "--cache-dir", str(cache)],
            cwd=project,
            env=hotsauce_env({}),
            stdout=out,
            stderr=out,
        )


def test_two_builds_sharing_a_cache_both_succeed_and_download_once(debian_rootfs_tarball: Path, tmp_path: Path) -> None:
    served_folder = tmp_path / "served"
    served_folder.mkdir()
    (served_folder / "bookworm.tar.zst").symlink_to(debian_rootfs_tarball)
    cache = tmp_path / "cache"
    with serving(served_folder) as served:
        builds = []
        for name in ("first", "second"):
            project = tmp_path / name
            project.mkdir()
            (project / "build.yaml").write_text(
                f"download:\n  from: {served.url}/bookworm.tar.zst\nhostname: {name}\nmodules: []\n"
            )
            log = tmp_path / f"{name}.log"
            builds.append((name, start_build(project, tmp_path / f"{name}-set", cache, log), log))
        statuses = {name: process.wait(timeout=600) for name, process, _ in builds}
        logs = {name: log.read_text() for name, _, log in builds}

    assert statuses == {"first": 0, "second": 0}, logs
    assert served.requests == ["/bookworm.tar.zst"]
    assert sorted("served from the cache" in text for text in logs.values()) == [False, True], logs
    for name in ("first", "second"):
        assert verify_set(tmp_path / f"{name}-set").build_id
    assert [p.name for p in (cache / "downloads").iterdir() if ".partial-" in p.name] == []
