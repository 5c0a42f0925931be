"""Module results come from the cache: unchanged modules do not run again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hotsauce.output.imageset import Manifest
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
    assert "the set of an identical build served from the cache" in log

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


def test_an_identical_build_copies_the_kept_set_and_one_whose_kept_files_changed_builds_again(
    debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    folder = project(tmp_path / "project", debian_rootfs_tarball, "second")
    cache, ran = tmp_path / "cache", tmp_path / "ran.log"
    log = build(folder, "one", cache, ran)
    # A quick last run is not archived: the kept set stands for it (result_cache.worth_keeping).
    assert "module run 2 of 2 not kept in the cache" in log
    log = build(folder, "two", cache, ran)
    assert "the set of an identical build served from the cache" in log
    one, two = folder / "one", folder / "two"
    assert (one / "root.qcow2").stat().st_ino != (two / "root.qcow2").stat().st_ino, "two outputs share a file"
    assert (one / "root.qcow2").read_bytes() == (two / "root.qcow2").read_bytes()
    # The build id and time come from the inputs (reproducible builds), so the reused set's are the same.
    assert Manifest.read(one) == Manifest.read(two)
    checked = subprocess.run(["sha256sum", "-c", *sorted(p.name for p in two.glob("*.sha256"))], cwd=two,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The first output is the kept set's own file until something writes it: written, the kept set
    # no longer matches its checksum, and the next build makes the set again from the module results.
    with (one / "root.qcow2").open("r+b") as image:
        image.seek(-1, 2)
        image.write(b"\x01")
    log = build(folder, "three", cache, ran)
    assert "the set of an identical build served from the cache" not in log
    assert "module runs 1-1 of 2 served from the cache" in log
    assert ran.read_text().split() == ["first", "second", "second"]
    three = folder / "three"
    checked = subprocess.run(["sha256sum", "-c", "root.qcow2.sha256"], cwd=three, capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0
