"""`hotsauce diff A B`: packages, modules and files changed between two image sets."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from hotsauce.output.imageset import verify_set
from hotsauce.output.set_diff import (
    Change,
    ChangeKind,
    FileEntry,
    SetDiff,
    compare,
    compare_sboms,
    compare_trees,
)
from tests.images import run_hotsauce
from tests.sbom_builds import ADDED_PACKAGE, ROLE_NAME, build_set, write_project


def sbom(packages: dict[str, str], modules: dict[str, str]) -> dict[str, object]:
    """A minimal SPDX JSON document as hotsauce writes one."""
    entries: list[dict[str, object]] = []
    for name_arch, version in packages.items():
        name, arch = name_arch.split(":")
        entries.append({"name": name, "versionInfo": version, "externalRefs": [
            {"referenceType": "purl", "referenceLocator": f"pkg:deb/debian/{name}@{version}?arch={arch}"}]})
    for name, version in modules.items():
        entries.append({"name": name, "versionInfo": version, "summary": "hotsauce module: role"})
    return {"spdxVersion": "SPDX-2.3", "packages": entries}


def test_packages_added_removed_and_changed_are_told_apart_and_sorted() -> None:
    old = sbom({"curl:amd64": "7.88.1-10", "vim:amd64": "9.0", "zsh:amd64": "5.9"}, {"acme.web": "1.0.0"})
    new = sbom({"curl:amd64": "7.88.1-11", "tree:amd64": "2.1.0", "zsh:amd64": "5.9"}, {"acme.web": "1.1.0"})
    packages, modules = compare_sboms(old, new)
    assert packages == [Change(ChangeKind.CHANGED, "curl:amd64", "7.88.1-10", "7.88.1-11"),
                        Change(ChangeKind.ADDED, "tree:amd64", None, "2.1.0"),
                        Change(ChangeKind.REMOVED, "vim:amd64", "9.0", None)]
    assert modules == [Change(ChangeKind.CHANGED, "role acme.web", "1.0.0", "1.1.0")]


def test_a_file_changes_with_its_mode_owner_size_or_content() -> None:
    regular = stat.S_IFREG | 0o644
    old = {"/etc/a": FileEntry(regular, 0, 0, 3, "sha256:aa"), "/etc/b": FileEntry(regular, 0, 0, 3, "sha256:bb")}
    new = {"/etc/a": FileEntry(regular | 0o111, 0, 0, 3, "sha256:aa"), "/etc/b": old["/etc/b"]}
    [change] = compare_trees(old, new)
    assert change == Change(ChangeKind.CHANGED, "/etc/a", "-rw-r--r-- 0:0 3 sha256:aa", "-rwxr-xr-x 0:0 3 sha256:aa")


def test_the_text_has_a_section_per_kind_and_says_when_nothing_differs() -> None:
    changes = SetDiff(packages=compare({"a": "1"}, {"a": "2", "b": "1"}))
    assert changes.lines() == ["packages: 1 added, 1 changed", "  ~ a 1 -> 2", "  + b 1"]
    assert not changes.same
    assert SetDiff().lines() == ["no differences"] and SetDiff().same
    assert json.loads(json.dumps(changes.as_json()))["packages"][1] == \
        {"kind": "added", "name": "b", "old": None, "new": "1"}


def test_a_path_that_is_not_a_set_exits_2(tmp_path: Path) -> None:
    result = run_hotsauce("diff", tmp_path / "nothing", tmp_path, cwd=tmp_path)
    assert result.returncode == 2
    assert "no such image set" in result.stderr and "Traceback" not in result.stderr


# --- two real builds ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_sets(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Builds of one project before and after its role went from 1.0.0 to 1.1.0, which installs a package.
    The new one is raw, so that both ways of reading a root (a raw copy of a qcow2, the raw file itself
    through a read-only loop device) are used."""
    old = build_set(write_project(tmp_path_factory.mktemp("diff-old"), str(debian_rootfs_tarball), "1.0.0"))
    new_project = write_project(tmp_path_factory.mktemp("diff-new"), str(debian_rootfs_tarball), "1.1.0")
    new = build_set(new_project, "out", "--format", "raw")
    return old, new


@pytest.mark.integration
def test_diff_of_two_builds_prints_exactly_the_added_package_and_the_changed_role(
    two_sets: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = two_sets
    result = run_hotsauce("diff", old, new, "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    changes = json.loads(result.stdout)
    [package] = changes["packages"]
    assert package["kind"] == "added" and package["name"] == f"{ADDED_PACKAGE}:amd64" and package["new"]
    [module] = changes["modules"]
    assert module["kind"] == "changed" and module["name"] == f"role {ROLE_NAME}"
    assert module["old"].startswith("1.0.0 ") and module["new"].startswith("1.1.0 ")
    files = {change["name"]: change for change in changes["files"]}
    assert files[f"/usr/bin/{ADDED_PACKAGE}"]["kind"] == "added"
    assert files["/etc/pkgrole"]["kind"] == "changed"
    text = run_hotsauce("diff", old, new, "--no-files", cwd=tmp_path)
    assert text.returncode == 1
    assert text.stdout.splitlines() == [
        "packages: 1 added", f"  + {ADDED_PACKAGE}:amd64 {package['new']}",
        "modules: 1 changed", f"  ~ role {ROLE_NAME} {module['old']} -> {module['new']}"]


@pytest.mark.integration
def test_a_raw_set_compared_with_itself_is_the_same_exits_0_and_is_not_written(
    two_sets: tuple[Path, Path], tmp_path: Path
) -> None:
    _, new = two_sets
    result = run_hotsauce("diff", new, new, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "no differences"
    verify_set(new)  # the raw root, mounted twice, still matches its checksum
