"""The default mirror comes from the host's apt sources, in both formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotsauce.bases.apt_sources import MirrorSources, SourceEntry, host_mirror
from hotsauce.errors import ConfigError

# Invented names only: the repository never names a real mirror.
MIRROR = "http://mirror.invalid/debian"
SECURITY = "http://security.invalid/debian-security"

DEB822 = f"""\
Types: deb
# a comment between fields
URIs: {MIRROR}/
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: {SECURITY}
Suites: bookworm-security
Components: main non-free-firmware
"""

ONE_LINE = f"""\
# the host's Debian archive
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} bookworm main
deb-src {MIRROR} bookworm main
deb {MIRROR} bookworm-updates main   # trailing comment
deb {SECURITY} bookworm-security main
"""


def write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_deb822_sources_give_the_mirror_with_its_updates_and_security_suites(
    tmp_path: Path,
) -> None:
    write(tmp_path, "sources.list.d/debian.sources", DEB822)
    assert host_mirror(tmp_path) == MirrorSources(
        uri=MIRROR,
        components=("main", "non-free-firmware"),
        updates=True,
        security_uri=SECURITY,
    )


def test_one_line_sources_list_gives_the_same_mirror(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", ONE_LINE)
    assert host_mirror(tmp_path) == MirrorSources(
        uri=MIRROR, components=("main",), updates=True, security_uri=SECURITY
    )


def test_list_files_in_sources_list_d_are_read(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.list", f"deb {MIRROR} bookworm main\n")
    assert host_mirror(tmp_path) == MirrorSources(uri=MIRROR)


def test_a_third_party_repository_listed_first_is_not_taken_for_the_debian_mirror(
    tmp_path: Path,
) -> None:
    write(tmp_path, "sources.list.d/aaa-vendor.list", "deb http://vendor.invalid/apt stable main\n")
    write(tmp_path, "sources.list.d/debian.sources", DEB822)
    assert host_mirror(tmp_path).uri == MIRROR


def test_disabled_stanzas_and_source_only_entries_are_ignored(tmp_path: Path) -> None:
    write(
        tmp_path,
        "sources.list.d/debian.sources",
        f"Types: deb\nURIs: http://old.invalid/debian\nSuites: bookworm\nComponents: main\n"
        f"Enabled: no\n\nTypes: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\n"
        f"Components: main\n\nTypes: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\n",
    )
    assert host_mirror(tmp_path) == MirrorSources(uri=MIRROR)


def test_a_host_without_sources_asks_for_a_mirror_in_build_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"base\.debian\.mirror") as raised:
        host_mirror(tmp_path)
    assert "\n" not in str(raised.value)


def test_companion_suites_follow_the_suite_being_built() -> None:
    mirror = MirrorSources(uri=MIRROR, updates=True, security_uri=SECURITY)
    assert mirror.entries_for("trixie") == (
        SourceEntry(MIRROR, "trixie", ("main",)),
        SourceEntry(MIRROR, "trixie-updates", ("main",)),
        SourceEntry(SECURITY, "trixie-security", ("main",)),
    )
    assert mirror.entries_for("sid") == (SourceEntry(MIRROR, "sid", ("main",)),)


def test_a_host_without_updates_or_security_builds_from_the_suite_alone(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", f"deb {MIRROR} bookworm main\n")
    assert host_mirror(tmp_path).entries_for("bookworm") == (
        SourceEntry(MIRROR, "bookworm", ("main",)),
    )
