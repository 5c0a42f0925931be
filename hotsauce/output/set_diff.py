"""What changed between two image sets: `hotsauce diff`'s comparison, on what was read from them.

Packages and modules come from each set's sbom.spdx.json; files from a walk of
each root filesystem (hotsauce.output.root_tree). Everything here is pure: it
compares what it is given, so it is tested without a set.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hotsauce.errors import ConfigError


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class Change:
    """One thing added, removed or changed; `old` and `new` say what it was and is (None: absent)."""

    kind: ChangeKind
    name: str
    old: str | None = None
    new: str | None = None


@dataclass(frozen=True)
class FileEntry:
    """What `hotsauce diff` compares of a file in the root: its type and mode, owner, size and content
    (a regular file's sha256, a link's target, a device's numbers)."""

    mode: int  # st_mode: type and permissions
    uid: int
    gid: int
    size: int
    content: str

    def describe(self) -> str:
        return f"{stat.filemode(self.mode)} {self.uid}:{self.gid} {self.size} {self.content}"


@dataclass
class SetDiff:
    packages: list[Change] = field(default_factory=list)
    modules: list[Change] = field(default_factory=list)
    files: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why

    @property
    def same(self) -> bool:
        return not (self.packages or self.modules or self.files)

    def as_json(self) -> dict[str, Any]:
        return {"same": self.same, "packages": [asdict(c) for c in self.packages],
                "modules": [asdict(c) for c in self.modules], "files": [asdict(c) for c in self.files],
                "notes": list(self.notes)}

    def lines(self) -> list[str]:
        """The changes as text, a section per kind: `+ name new`, `- name old`, `~ name old -> new`."""
        out: list[str] = [f"note: {note}" for note in self.notes]
        for title, changes in (("packages", self.packages), ("modules", self.modules), ("files", self.files)):
            if changes:
                out.append(f"{title}: {_count(changes)}")
                out += [f"  {_line(change)}" for change in changes]
        if self.same:
            out.append("no differences")
        return out


def _count(changes: Iterable[Change]) -> str:
    kinds = [change.kind for change in changes]
    return ", ".join(f"{kinds.count(kind)} {kind}" for kind in ChangeKind if kind in kinds)


def _line(change: Change) -> str:
    if change.kind is ChangeKind.ADDED:
        return f"+ {change.name} {change.new}"
    if change.kind is ChangeKind.REMOVED:
        return f"- {change.name} {change.old}"
    return f"~ {change.name} {change.old} -> {change.new}"


def compare(old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    """Names added, removed and changed between two {name: description} maps, sorted by name."""
    changes = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        kind = ChangeKind.ADDED if before is None else ChangeKind.REMOVED if after is None else ChangeKind.CHANGED
        changes.append(Change(kind, name, before, after))
    return changes


# --- what an SBOM says ------------------------------------------------------------------


def read_sbom(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: not a readable SBOM: {error}") from None
    if not isinstance(data, dict) or not str(data.get("spdxVersion", "")).startswith("SPDX-"):
        raise ConfigError(f"{path}: not an SPDX JSON document")
    return data


def sbom_packages(sbom: Mapping[str, Any]) -> dict[str, str]:
    """The installed packages an SBOM lists, `NAME:ARCH` -> version (those with a deb or rpm purl)."""
    found = {}
    for package in sbom.get("packages", []):
        locators = [ref.get("referenceLocator", "") for ref in package.get("externalRefs", [])
                    if ref.get("referenceType") == "purl"]
        purl = next((locator for locator in locators if locator.startswith(("pkg:deb/", "pkg:rpm/"))), None)
        if purl is None:
            continue
        arch = next((q.split("=", 1)[1] for q in purl.partition("?")[2].split("&") if q.startswith("arch=")), "")
        found[f"{package.get('name')}:{arch}"] = str(package.get("versionInfo", ""))
    return found


MODULE_SUMMARY_PREFIX = "hotsauce module: "


def sbom_modules(sbom: Mapping[str, Any]) -> dict[str, str]:
    """The modules an SBOM names, `KIND NAME` -> what identifies that module's content: its version
    and digests."""
    found = {}
    for package in sbom.get("packages", []):
        summary = str(package.get("summary", ""))
        if not summary.startswith(MODULE_SUMMARY_PREFIX):
            continue
        kind = summary.removeprefix(MODULE_SUMMARY_PREFIX)
        parts = []
        if version := package.get("versionInfo"):
            parts.append(str(version))
        parts += [f"sha256:{checksum['checksumValue']}" for checksum in package.get("checksums", [])
                  if checksum.get("algorithm") == "SHA256"]
        parts += [f"files-sha256:{ref['referenceLocator']}" for ref in package.get("externalRefs", [])
                  if ref.get("referenceCategory") == "OTHER"]
        name = f"{kind} {package.get('name')}"
        while name in found:  # the same module listed twice: tell the entries apart by order
            name += "'"
        found[name] = " ".join(parts) or "(no version)"
    return found


def compare_sboms(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[Change], list[Change]]:
    """(packages, modules) changed between two SBOMs."""
    return compare(sbom_packages(old), sbom_packages(new)), compare(sbom_modules(old), sbom_modules(new))


def compare_trees(old: Mapping[str, FileEntry], new: Mapping[str, FileEntry]) -> list[Change]:
    return compare({path: entry.describe() for path, entry in old.items()},
                   {path: entry.describe() for path, entry in new.items()})
