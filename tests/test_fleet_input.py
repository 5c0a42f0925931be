"""`hotsauce fleet` refuses bad input with one line and exit 2, before any builder is touched.

The inventory's one builder is at a TEST-NET address that nothing answers: a run
that reached for it would hang on SSH or say it is unreachable, not exit 2 at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.images import run_hotsauce

GOOD_INVENTORY = "all:\n  children:\n    builders:\n      hosts:\n        nowhere:\n          ansible_host: 192.0.2.1\n"


def project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "build.yaml").write_text("download:\n  from: http://192.0.2.1/root.tar\nkernel: false\n")
    return folder


def refused(tmp_path: Path, *args: str | Path) -> str:
    started = time.monotonic()
    result = run_hotsauce("fleet", *args, "-o", tmp_path / "out", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hotsauce: "), result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()
    return lines[0]


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(GOOD_INVENTORY)
    return path


def test_an_inventory_without_a_builders_group_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text("all:\n  children:\n    web:\n      hosts:\n        nowhere:\n          ansible_host: 192.0.2.1\n")
    line = refused(tmp_path, project(tmp_path / "web"), "-i", path)
    assert "no group 'builders'" in line and str(path) in line


def test_an_ini_inventory_without_builders_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text("[web]\n192.0.2.1\n")
    assert "no group 'builders'" in refused(tmp_path, project(tmp_path / "web"), "-i", path)


def test_a_build_folder_without_build_yaml_is_refused(tmp_path: Path, inventory: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = refused(tmp_path, project(tmp_path / "web"), empty, "-i", inventory)
    assert line.endswith(f"build folder {empty}: has no build.yaml")


def test_two_builds_with_the_same_name_are_refused(tmp_path: Path, inventory: Path) -> None:
    first, second = project(tmp_path / "one" / "web"), project(tmp_path / "two" / "web")
    line = refused(tmp_path, first, second, "-i", inventory)
    assert f"build folder {second}: a second build named 'web'" in line


@pytest.mark.parametrize("missing", ["build", "inventory", "outdir-parent"])
def test_a_controller_side_path_that_does_not_exist_is_refused(tmp_path: Path, inventory: Path, missing: str) -> None:
    build, nowhere = project(tmp_path / "web"), tmp_path / "nowhere"
    if missing == "build":
        line = refused(tmp_path, nowhere, "-i", inventory)
    elif missing == "inventory":
        line = refused(tmp_path, build, "-i", nowhere)
    else:
        result = run_hotsauce("fleet", build, "-i", inventory, "-o", nowhere / "out", cwd=tmp_path, timeout=60)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        line = result.stderr
    assert f"{nowhere}: no such file or folder" in line


def test_a_bad_build_yaml_is_refused_naming_its_file(tmp_path: Path, inventory: Path) -> None:
    build = project(tmp_path / "web")
    (build / "build.yaml").write_text("download:\n  from: http://192.0.2.1/root.tar\nkernel: perhaps\n")
    assert "kernel" in refused(tmp_path, build, "-i", inventory)


def test_a_bad_parallel_builds_value_is_refused_naming_its_host(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(GOOD_INVENTORY + "          hotsauce_parallel_builds: 0\n")
    line = refused(tmp_path, project(tmp_path / "web"), "-i", path)
    assert "nowhere" in line and "hotsauce_parallel_builds" in line
