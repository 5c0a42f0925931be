"""Module results come from the cache: unchanged modules do not run again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images import mounted_root_image, run_hotsauce

pytestmark = pytest.mark.integration

# Each module notes on the host that it ran (the test's own file), and leaves its mark in the image.
MODULE = """
import os

def modify(name, root, cfg):
    with open(os.environ["RAN_LOG"], "a") as ran:
        ran.write(name + "\\n")
    with open(os.path.join(root, "etc", "marks"), "a") as marks:
        marks.write("{mark}\\n")
"""


def project(folder: Path, tarball: Path, second_mark: str) -> Path:
    (folder / "python_modules").mkdir(parents=True, exist_ok=True)
    (folder / "python_modules" / "first.py").write_text(MODULE.format(mark="first"))
    (folder / "python_modules" / "second.py").write_text(MODULE.format(mark=second_mark))
    (folder / "build.yaml").write_text(f"download:\n  from: {tarball}\nmodules: [first, second]\nkernel: false\n")
    return folder


def build(folder: Path, output: str, cache: Path, ran_log: Path) -> str:
    result = run_hotsauce("build", "-s", "2G", "-o", output, "--cache-dir", cache, cwd=folder,
                          env={"RAN_LOG": str(ran_log)})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_unchanged_modules_are_served_from_the_cache_and_a_changed_one_reruns_alone(
    debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    folder = project(tmp_path / "project", debian_rootfs_tarball, "second-v1")
    cache, ran = tmp_path / "cache", tmp_path / "ran.log"

    build(folder, "one", cache, ran)
    assert ran.read_text().split() == ["first", "second"]

    log = build(folder, "two", cache, ran)
    assert ran.read_text().split() == ["first", "second"], "an unchanged build ran modules again"
    assert "module runs 1-2 of 2 served from the cache" in log

    project(folder, debian_rootfs_tarball, "second-v2")
    log = build(folder, "three", cache, ran)
    assert ran.read_text().split() == ["first", "second", "second"]
    assert "module runs 1-1 of 2 served from the cache" in log

    for output, marks in (("two", ["first", "second-v1"]), ("three", ["first", "second-v2"])):
        scratch = tmp_path / f"look-{output}"
        scratch.mkdir()
        with mounted_root_image(folder / output / "root.qcow2", scratch) as root:
            assert (root / "etc" / "marks").read_text().split() == marks


def test_no_cache_runs_every_module(debian_rootfs_tarball: Path, tmp_path: Path) -> None:
    folder = project(tmp_path / "project", debian_rootfs_tarball, "second")
    cache, ran = tmp_path / "cache", tmp_path / "ran.log"
    build(folder, "one", cache, ran)
    result = run_hotsauce("build", "-s", "2G", "-o", "two", "--cache-dir", cache, "--no-cache", cwd=folder,
                          env={"RAN_LOG": str(ran)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert ran.read_text().split() == ["first", "second", "first", "second"]
