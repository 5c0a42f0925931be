"""sbom.spdx.json: what an image holds and was built from, as SPDX 2.3, in every set and in the image."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from hotsauce.modules.sandbox import command_in_image
from hotsauce.output.imageset import Manifest, verify_set
from hotsauce.output.root_tree import mounted_set_root
from hotsauce.output.sbom import (
    IN_IMAGE_PATH,
    SBOM_NAME,
    BaseFacts,
    ImageFacts,
    InstalledPackage,
    MirrorSuite,
    ModuleFacts,
    creation_time,
    dep5_licence,
    gather,
    read_dpkg_status,
    spdx_licence_text,
    write_image_sbom,
)
from hotsauce.output.set_diff import sbom_modules, sbom_packages
from tests.sbom_builds import ROLE_NAME, build_set, write_project

DPKG_STATUS = """\
Package: libfoo1
Status: install ok installed
Architecture: amd64
Source: foo (1.2-3)
Version: 1.2-3+b1
Description: a library
 with a long description.

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1

Package: tool
Status: install ok installed
Architecture: all
Version: 2:4.5
"""

DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: foo

Files: debian/*
Copyright: someone
License: GPL-2+

Files: *
Copyright: 2020 Foo
License: LGPL-2.1+ or GPL-2+, and Expat
 This text goes on.

License: Expat
 Permission is hereby granted...
"""


def test_the_dpkg_status_gives_installed_packages_with_their_source_and_version() -> None:
    packages = list(read_dpkg_status(DPKG_STATUS))
    assert packages == [
        InstalledPackage("deb", "libfoo1", "amd64", "1.2-3+b1", "foo", "1.2-3"),
        InstalledPackage("deb", "tool", "all", "2:4.5", "tool", "2:4.5"),
    ]


def test_a_machine_readable_copyright_file_gives_the_licence_of_its_files_star_paragraph() -> None:
    assert dep5_licence(DEP5) == "LGPL-2.1+ or GPL-2+, and Expat"
    assert dep5_licence("This package was debianized by someone.\n\nLicense: GPL\n") is None


def test_debian_licence_names_become_spdx_expressions_keeping_the_comma_looser_than_and_or() -> None:
    assert spdx_licence_text("LGPL-2.1+ or GPL-2+, and Expat") == "(LGPL-2.1-or-later OR GPL-2.0-or-later) AND MIT"
    assert spdx_licence_text("GPL-2") == "GPL-2.0-only"
    assert spdx_licence_text("GPL-2+ with OpenSSL exception") == "GPL-2.0-or-later WITH OpenSSL-exception"
    assert spdx_licence_text("public-domain") == "LicenseRef-public-domain"


def test_the_creation_time_is_source_date_epoch_else_the_newest_release_date_never_the_clock() -> None:
    suites = (MirrorSuite("http://m/debian", "bookworm", ("main",), "Sat, 08 Nov 2025 10:00:00 UTC"),
              MirrorSuite("http://m/debian", "bookworm-updates", ("main",), "Thu, 27 Nov 2025 08:00:00 UTC"))
    base = BaseFacts("debian", suites=suites)
    assert creation_time(base, {"SOURCE_DATE_EPOCH": "1700000000"}) == datetime.fromtimestamp(1700000000, UTC)
    assert creation_time(base, {}) == datetime(2025, 11, 27, 8, 0, tzinfo=UTC)
    assert creation_time(BaseFacts("download"), {}) == datetime.fromtimestamp(0, UTC)


def fake_root(root: Path) -> Path:
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(DPKG_STATUS)
    (root / "usr/share/doc/libfoo1").mkdir(parents=True)
    (root / "usr/share/doc/libfoo1/copyright").write_text(DEP5)
    (root / "usr/share/doc/tool").mkdir(parents=True)
    (root / "usr/share/doc/tool/copyright").write_text(DEP5.replace("Files: *\n", "Files: *\n").replace(
        "LGPL-2.1+ or GPL-2+, and Expat", "Hot-Sauce-Licence"))
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    return root


def written_sbom(tmp_path: Path, name: str) -> Path:
    root = fake_root(tmp_path / f"root-{name}")
    staging = tmp_path / f"set-{name}"
    staging.mkdir()
    modules = [ModuleFacts("python", "stamp", sha256="ab" * 32, origin="beside the build.yaml: stamp.py"),
               ModuleFacts("role", "acme.web", "1.2.0", "./acme_web.tar.gz", files_sha256="cd" * 32)]
    base = BaseFacts("download", url="https://example.invalid/root.tar.zst", sha256="ef" * 32, modified=1.7e9)
    facts = gather(root, hostname="web1", base=base, modules=modules, hotsauce_version="0.1.0")
    return write_image_sbom(facts, staging, root)


def test_the_sbom_of_a_root_validates_and_names_packages_licences_and_modules(tmp_path: Path) -> None:
    path = written_sbom(tmp_path, "a")
    document = parse_file(str(path))
    assert validate_full_spdx_document(document) == []
    data = json.loads(path.read_text())
    assert sbom_packages(data) == {"libfoo1:amd64": "1.2-3+b1", "tool:all": "2:4.5"}
    libfoo = next(p for p in data["packages"] if p["name"] == "libfoo1")
    assert libfoo["licenseDeclared"] == "(LGPL-2.1-or-later OR GPL-2.0-or-later) AND MIT"
    assert libfoo["externalRefs"][0]["referenceLocator"] == \
        "pkg:deb/debian/libfoo1@1.2-3%2Bb1?arch=amd64&distro=debian-12"
    assert "source package foo 1.2-3" in libfoo["sourceInfo"]
    tool = next(p for p in data["packages"] if p["name"] == "tool")
    assert tool["licenseDeclared"] == "LicenseRef-Hot-Sauce-Licence"
    assert sbom_modules(data) == {"python stamp": f"sha256:{'ab' * 32}",
                                  "role acme.web": f"1.2.0 files-sha256:{'cd' * 32}"}
    kinds = {(r["relationshipType"], r["relatedSpdxElement"]) for r in data["relationships"]
             if r["spdxElementId"] == "SPDXRef-image"}
    assert ("CONTAINS", libfoo["SPDXID"]) in kinds and ("GENERATED_FROM", "SPDXRef-base") in kinds
    assert data["creationInfo"]["created"] == "2023-11-14T22:13:20Z"  # the tarball's time, not the clock


def test_two_sboms_of_the_same_root_are_byte_identical_and_the_image_holds_the_same(tmp_path: Path) -> None:
    first, second = written_sbom(tmp_path, "a"), written_sbom(tmp_path, "b")
    assert first.read_bytes() == second.read_bytes()
    in_image = tmp_path / "root-a" / IN_IMAGE_PATH.lstrip("/")
    assert in_image.read_bytes() == first.read_bytes()


def test_an_rpm_database_that_lists_nothing_leaves_the_deb_packages_listed_and_fails_nothing(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "root")
    (root / "var/lib/rpm").mkdir(parents=True)
    (root / "var/lib/rpm/rpmdb.sqlite").write_bytes(b"not a database")
    facts: ImageFacts = gather(root, hostname="h", base=BaseFacts("download"), modules=[], hotsauce_version="0")
    assert {package.manager for package in facts.packages} == {"deb"}


# --- a real build -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = write_project(tmp_path_factory.mktemp("sbom-project"), str(debian_rootfs_tarball), "1.0.0")
    return build_set(project)


@pytest.mark.integration
def test_the_built_sets_sbom_is_checksummed_and_passes_spdx_tools_validation(built: Path) -> None:
    manifest = verify_set(built)
    assert manifest.sbom == SBOM_NAME and (built / f"{SBOM_NAME}.sha256").is_file()
    assert validate_full_spdx_document(parse_file(str(built / SBOM_NAME))) == []


@pytest.mark.integration
def test_the_sbom_lists_exactly_what_dpkg_query_lists_in_the_image(built: Path, tmp_path: Path) -> None:
    listed = sbom_packages(json.loads((built / SBOM_NAME).read_text()))
    with mounted_set_root(built, Manifest.read(built), tmp_path) as root:
        query_format = r"${db:Status-Status} ${Package}:${Architecture} ${Version}\n"
        query = command_in_image(root, ["dpkg-query", "-W", "-f", query_format])
        output = subprocess.run(query, capture_output=True, text=True, check=True).stdout
        in_image = (root / IN_IMAGE_PATH.lstrip("/")).read_bytes()
    installed = dict(line.split()[1:] for line in output.splitlines() if line.startswith("installed "))
    assert len(installed) > 100
    assert listed == installed
    assert in_image == (built / SBOM_NAME).read_bytes()


@pytest.mark.integration
def test_the_sbom_names_the_held_role_with_its_version_and_the_python_module_with_its_digest(built: Path) -> None:
    data = json.loads((built / SBOM_NAME).read_text())
    modules = sbom_modules(data)
    stamp = hashlib.sha256((built.parent / "python_modules" / "stamp.py").read_bytes()).hexdigest()
    assert modules["python stamp"] == f"sha256:{stamp}"
    assert modules[f"role {ROLE_NAME}"].startswith("1.0.0 files-sha256:")
    role = next(p for p in data["packages"] if p["name"] == ROLE_NAME)
    assert role["sourceInfo"] == "from ./pkgrole.tar.gz"
    hotsauce = next(p for p in data["packages"] if p["name"] == "hotsauce")
    assert hotsauce["versionInfo"]


@pytest.mark.integration
def test_a_second_build_of_the_same_project_gives_the_same_sbom_and_none_when_disabled(built: Path) -> None:
    project = built.parent
    again = build_set(project, "again")
    assert (again / SBOM_NAME).read_bytes() == (built / SBOM_NAME).read_bytes()
    disabled = project / "disabled.yaml"
    disabled.write_text((project / "build.yaml").read_text() + "sbom: {enabled: false}\n")
    without = build_set(project, "without", "-c", str(disabled))
    assert Manifest.read(without).sbom is None and not (without / SBOM_NAME).exists()


def test_spdx_tools_is_imported_while_the_base_stage_runs_and_the_thread_is_gone_after() -> None:
    # In a fresh interpreter: this one imported spdx-tools already.
    script = (
        "import sys, threading\n"
        "from hotsauce.output.sbom import spdx_tools_imported_meanwhile\n"
        "assert 'spdx_tools' not in sys.modules\n"
        "with spdx_tools_imported_meanwhile():\n"
        "    pass\n"
        "assert 'hotsauce.output.spdx_document' in sys.modules and 'spdx_tools' in sys.modules\n"
        "assert [t.name for t in threading.enumerate()] == ['MainThread']\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
