"""What is in an image: its SPDX 2.3 software bill of materials (`sbom.spdx.json`).

Read while the image's root is still mounted, after the modules ran: every
installed package from the image's own package database (dpkg's status file;
rpm's database where the image has one and the host has `rpm`), with its
licence where the package's copyright file is machine-readable (DEP-5); the
base it was built from; every module (a Python module's or playbook's file
digest, a role's source and version); and the hotsauce that built it.

The document is made and validated with spdx-tools. It is deterministic: the
same image from the same inputs gives the same bytes. Its lists are sorted,
its namespace is derived from its content, and its creation time is
SOURCE_DATE_EPOCH when set, else the base's own time (the newest Release
date of a Debian base, or the tarball's modification time), never the clock.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import yaml

from hotsauce.bases.apt_sources import control_stanzas
from hotsauce.config import ModuleKind
from hotsauce.errors import CommandFailed
from hotsauce.host import proc
from hotsauce.modules.resolve import ResolvedModule
from hotsauce.rootpath import inside

SBOM_NAME = "sbom.spdx.json"
# Where the image carries its own SBOM (Azure's image customizer uses this folder for its manifests).
IN_IMAGE_PATH = "/usr/share/os-manifests/sbom.spdx.json"
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
DPKG_STATUS = "/var/lib/dpkg/status"
RPM_DATABASES = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
# The `Files: *` paragraph comes first in nearly every copyright file; some files run to megabytes.
COPYRIGHT_HEAD_BYTES = 32 << 10
GALAXY_INSTALL_INFO = "meta/.galaxy_install_info"
# SPDX recommends this prefix for documents whose creator has no namespace of its own.
NAMESPACE_PREFIX = "https://spdx.org/spdxdocs/hotsauce"
_RPM_FIELDS = ("NAME", "EPOCHNUM", "VERSION", "RELEASE", "ARCH", "SOURCERPM", "LICENSE")


# --- what the image holds -----------------------------------------------------------


@dataclass(frozen=True, order=True)
class InstalledPackage:
    """One installed package, as the image's package database says."""

    manager: str  # deb | rpm
    name: str
    architecture: str
    version: str
    source: str  # the source package's name
    source_version: str
    licence: str | None = None  # the licence as the package states it (a DEP-5 short name), None: unknown
    epoch: str = ""  # rpm only: the epoch, kept out of `version` as purl wants it


def installed_packages(root: Path) -> tuple[list[InstalledPackage], list[str]]:
    """Every installed package of the image at `root`, sorted, and notes on what could not be read."""
    packages: list[InstalledPackage] = []
    notes: list[str] = []
    status = inside(root, DPKG_STATUS)
    if status.is_file():
        doc = inside(root, "/usr/share/doc")
        packages += [_with_licence(doc, root, package)
                     for package in read_dpkg_status(status.read_text(errors="replace"))]
    rpm_database = next((inside(root, db) for db in RPM_DATABASES if inside(root, db).is_dir()), None)
    if rpm_database is not None and any(rpm_database.iterdir()):
        if shutil.which("rpm") is None:
            notes.append("the image has an rpm database, but this host has no `rpm` to read it: rpm packages "
                         "are not listed")
        else:
            try:
                packages += read_rpm_packages(root)
            except CommandFailed as error:
                notes.append(f"the image's rpm database could not be read ({error}): rpm packages are not listed")
    return sorted(packages), notes


def read_dpkg_status(text: str) -> Iterator[InstalledPackage]:
    """The installed packages of a dpkg status file (those whose status is `installed`)."""
    for stanza in control_stanzas(text):
        if stanza.get("status", "").split()[-1:] != ["installed"]:
            continue
        name, version = stanza.get("package", ""), stanza.get("version", "")
        source, source_version = name, version
        if "source" in stanza:  # `Source: NAME` or `Source: NAME (VERSION)` when it differs
            words = stanza["source"].split()
            source = words[0]
            if len(words) > 1:
                source_version = words[1].strip("()")
        yield InstalledPackage("deb", name, stanza.get("architecture", ""), version, source, source_version)


def _with_licence(doc: Path, root: Path, package: InstalledPackage) -> InstalledPackage:
    folder = doc / package.name
    copyright_file = folder / "copyright"
    if folder.is_symlink() or copyright_file.is_symlink():
        # resolved as the image would (`doc` itself already is): a link never leads out of the image
        copyright_file = inside(root, f"/usr/share/doc/{package.name}/copyright")
    try:
        with copyright_file.open("rb") as stream:
            head = stream.read(COPYRIGHT_HEAD_BYTES)
    except OSError:  # none: no licence known
        return package
    licence = dep5_licence(head.decode(errors="replace"))
    return package if licence is None else replace(package, licence=licence)


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_FIELD = re.compile(r"^(?P<name>[A-Za-z-]+):[ \t]*(?P<value>.*)$", re.MULTILINE)


def dep5_licence(text: str) -> str | None:
    """The licence of a machine-readable (DEP-5) copyright file: the `License:` of its `Files: *`
    paragraph, as written. None when the file is not machine-readable or says nothing for `*`.
    Only the fields' first lines are read: licence texts can be long, and a build reads hundreds."""
    paragraphs = _paragraphs(text.lstrip("\n"))
    if not re.match(r"(?i)format:", next(paragraphs, "")):
        return None
    for paragraph in paragraphs:
        if not paragraph.lower().startswith("files:"):
            continue
        fields = {match["name"].lower(): match["value"].strip() for match in _FIELD.finditer(paragraph)}
        if fields.get("files", "").split()[:1] == ["*"] and fields.get("license"):
            return fields["license"]
    return None


def _paragraphs(text: str) -> Iterator[str]:
    """The paragraphs of a control-format text one by one: the one wanted is usually near the top."""
    start = 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        yield text[start:match.start()]
        start = match.end()
    yield text[start:]


def read_rpm_packages(root: Path) -> list[InstalledPackage]:
    """The image's rpm database, read with the host's rpm (`--root`, so the image's own database)."""
    query = "\t".join(f"%{{{name}}}" for name in _RPM_FIELDS) + "\n"
    listing = proc.output_of(["rpm", "--root", root, "-qa", "--qf", query])
    packages = []
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) != len(_RPM_FIELDS):
            continue
        name, epoch, version, release, arch, source_rpm, licence = fields
        source, source_version = _rpm_source(source_rpm)
        packages.append(InstalledPackage("rpm", name, arch, f"{version}-{release}", source or name,
                                         source_version or f"{version}-{release}",
                                         licence if licence != "(none)" else None,
                                         "" if epoch in ("0", "(none)") else epoch))
    return packages


def _rpm_source(source_rpm: str) -> tuple[str, str]:
    """NAME-VERSION-RELEASE.src.rpm as (NAME, VERSION-RELEASE)."""
    stem = source_rpm.removesuffix(".rpm").rsplit(".", 1)[0]
    parts = stem.rsplit("-", 2)
    return (parts[0], f"{parts[1]}-{parts[2]}") if len(parts) == 3 else ("", "")


# --- licences -----------------------------------------------------------------------

# Debian's copyright-format short names that differ from SPDX's identifiers.
_DEBIAN_LICENCE_NAMES = {
    "expat": "MIT",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "isc": "ISC",
    "zlib": "Zlib",
    "artistic": "Artistic-1.0",
    "artistic-2.0": "Artistic-2.0",
    "mpl-1.1": "MPL-1.1",
    "mpl-2.0": "MPL-2.0",
    "apache-2.0": "Apache-2.0",
    "cc0-1.0": "CC0-1.0",
    "cc0": "CC0-1.0",
    "python-2.0": "Python-2.0",
    "psf-2": "PSF-2.0",
    "openssl": "OpenSSL",
    "public-domain": "LicenseRef-public-domain",
}
_GNU_FAMILIES = ("GPL", "LGPL", "AGPL", "GFDL")


def spdx_licence_text(debian: str) -> str:
    """A DEP-5 licence expression (`GPL-2+ or Artistic`, `LGPL-2.1+ with OpenSSL exception`) in SPDX's
    words; a name SPDX does not know becomes LicenseRef-NAME."""
    # DEP-5: a comma binds more loosely than `and` and `or` (`A or B, and C` is `(A or B) and C`).
    first, *rest = re.split(r"\s*,\s*", debian.strip())
    text = first
    for part in rest:
        text = f"({text}) {part}"
    words = []
    for word in re.split(r"(\s+|\(|\))", text):
        lower = word.lower()
        if not word.strip() or word in "()":
            words.append(word)
        elif lower in ("or", "and"):
            words.append(lower.upper())
        elif lower == "with":
            words.append("WITH")
        else:
            words.append(_spdx_licence_id(word))
    expression = "".join(words)
    # `X with Y exception` names the exception in two words; SPDX knows a few of them by id.
    return re.sub(r"(\S+)\s+WITH\s+(\S+)\s+exception", _with_exception, expression, flags=re.IGNORECASE)


def _spdx_licence_id(name: str) -> str:
    lower = name.lower()
    if lower in _DEBIAN_LICENCE_NAMES:
        return _DEBIAN_LICENCE_NAMES[lower]
    if match := re.fullmatch(r"(A?L?GPL|GFDL)-(\d(?:\.\d)?)(\+?)", name, re.IGNORECASE):
        family, version, later = match.group(1).upper(), match.group(2), match.group(3)
        version = version if "." in version else f"{version}.0"
        if family in _GNU_FAMILIES:
            return f"{family}-{version}-{'or-later' if later else 'only'}"
    return name


_EXCEPTIONS = {"openssl": "OpenSSL-exception", "gcc": "GCC-exception-3.1", "autoconf": "Autoconf-exception-3.0",
               "font": "Font-exception-2.0", "classpath": "Classpath-exception-2.0"}


def _with_exception(match: re.Match[str]) -> str:
    """`LICENCE WITH NAME exception`: SPDX's exception id where it has one; otherwise the whole as one
    licence reference (SPDX has no references to exceptions)."""
    licence, name = match.group(1), match.group(2)
    if known := _EXCEPTIONS.get(name.lower()):
        return f"{licence} WITH {known}"
    return f"LicenseRef-{licence.removeprefix('LicenseRef-')}-with-{name}-exception"


# --- what the image was built from --------------------------------------------------


@dataclass(frozen=True)
class MirrorSuite:
    uri: str
    suite: str
    components: tuple[str, ...]
    release_date: str  # the Date of its Release file, as the mirror wrote it


@dataclass(frozen=True)
class BaseFacts:
    """What the root was filled from: a tarball (`url`, `sha256`) or a Debian mirror's suites."""

    kind: str  # download | debian
    url: str | None = None
    sha256: str | None = None
    modified: float | None = None  # the tarball's modification time
    suites: tuple[MirrorSuite, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)  # variant, include, bootable...

    def newest_time(self) -> datetime | None:
        """The base's own time: the newest Release date, or the tarball's modification time."""
        dates = [release_datetime(suite.release_date) for suite in self.suites]
        if known := [date for date in dates if date is not None]:
            return max(known)
        return datetime.fromtimestamp(int(self.modified), UTC) if self.modified is not None else None


def release_datetime(text: str) -> datetime | None:
    try:
        return parsedate_to_datetime(text).astimezone(UTC)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ModuleFacts:
    """One module as the SBOM names it."""

    kind: str  # python | role | playbook
    name: str
    version: str | None = None  # a role's version or git commit
    source: str | None = None  # where a role came from (its requirements.yml src)
    sha256: str | None = None  # a Python module's or playbook's file digest
    files_sha256: str | None = None  # a role's files (names, modes, contents)
    origin: str = ""  # where hotsauce found it


def module_facts(modules: Sequence[ResolvedModule], requirements: Path | None,
                 directory: Path) -> list[ModuleFacts]:
    """The modules as the SBOM names them; `directory` is the build.yaml's folder, which the SBOM names
    module files relative to (an absolute path would make two checkouts' SBOMs differ)."""
    from hotsauce.modules.result_cache import tree_digest  # the module cache's digest of a role's files

    wanted = _requirement_entries(requirements)
    facts = []
    for module in modules:
        if module.kind is ModuleKind.ROLE:
            info = _galaxy_install_info(module.path)
            entry = wanted.get(module.path.name) or wanted.get(module.name) or {}
            version = str(info.get("version") or entry.get("version") or "") or None
            source = entry.get("src") or entry.get("source")
            facts.append(ModuleFacts("role", module.name, version, str(source) if source else None,
                                     files_sha256=tree_digest(module.path),
                                     origin=_origin(module.path, directory)))
        else:
            digest = hashlib.sha256(module.path.read_bytes()).hexdigest()
            facts.append(ModuleFacts(str(module.kind), module.name, sha256=digest,
                                     origin=_origin(module.path, directory)))
    return facts


def _origin(path: Path, directory: Path) -> str:
    """Where a module was found, in words that do not depend on where the checkout or cache lies."""
    from hotsauce.modules.builtins import builtin_folder

    places = ((directory, "beside the build.yaml"), (builtin_folder("roles").parent, "built into hotsauce"))
    for folder, words in places:
        if path.is_relative_to(folder):
            return f"{words}: {path.relative_to(folder)}"
    return f"installed from requirements: {path.name}"


def _galaxy_install_info(role: Path) -> dict[str, Any]:
    """What ansible-galaxy wrote when it installed the role (its version), {} for a role it did not."""
    try:
        data = yaml.safe_load((role / GALAXY_INSTALL_INFO).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _requirement_entries(requirements: Path | None) -> dict[str, dict[str, Any]]:
    """The roles of requirements.yml by the name they install under."""
    if requirements is None or not requirements.is_file():
        return {}
    try:
        data = yaml.safe_load(requirements.read_text())
    except yaml.YAMLError:
        return {}
    roles = data.get("roles", []) if isinstance(data, dict) else data if isinstance(data, list) else []
    entries: dict[str, dict[str, Any]] = {}
    for entry in roles or []:
        if isinstance(entry, str):
            entry = {"src": entry}
        if not isinstance(entry, dict):
            continue
        name = entry.get("name") or _role_name_from(str(entry.get("src", "")))
        if name:
            entries[str(name)] = entry
    return entries


def _role_name_from(source: str) -> str:
    """The folder ansible-galaxy installs a source under: a URL's or file's last part without its suffix."""
    last = source.rstrip("/").rsplit("/", 1)[-1].removeprefix("git+")
    if "," in last:
        last = last.split(",")[-1]
    return re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.git|\.zip)$", "", last)


# --- the document -------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    """Everything the SBOM says, gathered before it is written."""

    hostname: str
    os_release: Mapping[str, str]
    packages: Sequence[InstalledPackage]
    base: BaseFacts
    modules: Sequence[ModuleFacts]
    hotsauce_version: str
    notes: Sequence[str] = ()


def creation_time(base: BaseFacts, environ: Mapping[str, str] | None = None) -> datetime:
    """SOURCE_DATE_EPOCH when set, else the base's own time, else the epoch: never the clock."""
    environ = os.environ if environ is None else environ
    if (epoch := environ.get(SOURCE_DATE_EPOCH, "").strip()).isdigit():
        return datetime.fromtimestamp(int(epoch), UTC)
    return base.newest_time() or datetime.fromtimestamp(0, UTC)


def read_os_release_of(root: Path) -> dict[str, str]:
    from hotsauce.output.boot_files import read_os_release

    return read_os_release(root)


def gather(root: Path, *, hostname: str, base: BaseFacts, modules: Iterable[ModuleFacts],
           hotsauce_version: str) -> ImageFacts:
    """What the SBOM of the mounted image at `root` says."""
    packages, notes = installed_packages(root)
    return ImageFacts(hostname, read_os_release_of(root), packages, base, list(modules), hotsauce_version, notes)


def write_image_sbom(facts: ImageFacts, staging: Path, root: Path | None) -> Path:
    """sbom.spdx.json in the set's staging folder, and a copy in the image at `root` (None: not in the image)."""
    from hotsauce.output.spdx_document import sbom_document, write_sbom

    document = sbom_document(facts, creation_time(facts.base))
    path = staging / SBOM_NAME
    write_sbom(document, path)
    os.chmod(path, 0o644)
    if root is not None:
        _copy_into_image(path, root, True)
    return path


# --- in the build ---------------------------------------------------------------------

SBOM_CACHE = "sbom"  # cache kind: SBOMs of roots restored whole from the module cache


def describe_download(url: str, download: Path, sha256: str | None) -> BaseFacts:
    """A root tarball: where from, and its sha256 (the one build.yaml gave and the download matched)."""
    from hotsauce.output.imageset import sha256_of

    return BaseFacts("download", url=url, sha256=sha256 or sha256_of(download), modified=download.stat().st_mtime)


def describe_debian(sources: Iterable[tuple[str, str, tuple[str, ...]]], release_dates: Mapping[str, str],
                    details: Mapping[str, Any]) -> BaseFacts:
    """A Debian base: each (uri, suite, components) with its Release date (keyed `URI SUITE`)."""
    suites = tuple(MirrorSuite(uri, suite, components, release_dates.get(f"{uri} {suite}", ""))
                   for uri, suite, components in sources)
    return BaseFacts("debian", suites=suites, details=dict(details))


@dataclass(frozen=True)
class SbomRequest:
    """What the build knows of the image besides its root."""

    hostname: str
    hotsauce_version: str
    modules: Sequence[ModuleFacts]
    describe_base: Any  # () -> BaseFacts: hashing a tarball is only worth it when the SBOM is made
    in_image: bool = True
    # What the root holds, when the module cache can say (its last layer's name): an SBOM made
    # for the same root, modules and hotsauce is reused instead of made again.
    root_identity: str | None = None


def provide_image_sbom(request: SbomRequest, root: Path, staging: Path, cache: Any | None) -> Path:
    """sbom.spdx.json in `staging` (and in the image, unless not wanted), from the cache when a build
    of the same root made it already."""
    if cache is None or request.root_identity is None:
        return _made_sbom(request, root, staging)
    key = {"root": request.root_identity, "hostname": request.hostname, "hotsauce": request.hotsauce_version,
           "modules": [vars(module) for module in request.modules],
           SOURCE_DATE_EPOCH: os.environ.get(SOURCE_DATE_EPOCH, "")}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".spdx.json"
    with cache.locked(SBOM_CACHE, name) as entry:
        if entry.is_file():
            path = staging / SBOM_NAME
            shutil.copyfile(entry, path)
            os.chmod(path, 0o644)
            _copy_into_image(path, root, request.in_image)
            return path
        path = _made_sbom(request, root, staging)
        partial = cache.temporary_name(entry)
        shutil.copyfile(path, partial)
        cache.write_key(entry, key)
        cache.publish(partial, entry)
    cache.prune(SBOM_CACHE, keep=SBOM_CACHE_KEEP)
    return path


SBOM_CACHE_KEEP = 20


@contextmanager
def spdx_tools_imported_meanwhile() -> Iterator[None]:
    """While the build waits on tar or mmdebstrap, spdx-tools (0.2 s to import, most of it beartype
    decorating its model) is imported in a thread, so the SBOM stage finds it loaded; joined on the
    way out, whatever happened. Python's per-module import locks keep an import that the stage
    starts meanwhile waiting for this one."""
    importer = threading.Thread(target=_import_spdx_document, name="hotsauce-spdx-import", daemon=True)
    importer.start()
    try:
        yield
    finally:
        importer.join()


def _import_spdx_document() -> None:
    # A failure here is the SBOM stage's to report: it imports the module again.
    with suppress(Exception):
        importlib.import_module("hotsauce.output.spdx_document")


def _made_sbom(request: SbomRequest, root: Path, staging: Path) -> Path:
    facts = gather(root, hostname=request.hostname, base=request.describe_base(), modules=request.modules,
                   hotsauce_version=request.hotsauce_version)
    return write_image_sbom(facts, staging, root if request.in_image else None)


def _copy_into_image(path: Path, root: Path, in_image: bool) -> None:
    if not in_image:
        return
    target = inside(root, IN_IMAGE_PATH)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    os.chmod(target, 0o644)
