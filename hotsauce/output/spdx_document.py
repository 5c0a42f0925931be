"""The SPDX 2.3 document of an image, made and validated with spdx-tools (see hotsauce.output.sbom).

spdx-tools takes most of a second to import: only a build that writes an SBOM,
and `hotsauce diff`'s readers never, load this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from boolean.boolean import ParseError
from license_expression import ExpressionError
from packageurl import PackageURL
from spdx_tools.common.spdx_licensing import spdx_licensing
from spdx_tools.spdx.jsonschema.document_converter import DocumentConverter
from spdx_tools.spdx.model.actor import Actor, ActorType
from spdx_tools.spdx.model.checksum import Checksum, ChecksumAlgorithm
from spdx_tools.spdx.model.document import CreationInfo, Document
from spdx_tools.spdx.model.extracted_licensing_info import ExtractedLicensingInfo
from spdx_tools.spdx.model.package import ExternalPackageRef, ExternalPackageRefCategory, Package, PackagePurpose
from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.validation.uri_validators import validate_download_location

from hotsauce.errors import StageFailed
from hotsauce.output.sbom import (
    NAMESPACE_PREFIX,
    ImageFacts,
    InstalledPackage,
    ModuleFacts,
    release_datetime,
    spdx_licence_text,
)

# An SPDX id is letters, digits, '.' and '-'.
_NOT_IN_SPDX_ID = re.compile(r"[^A-Za-z0-9.-]")


def spdx_id(*parts: str) -> str:
    """An SPDX id from names that may hold characters ids cannot; a digest keeps such ids apart."""
    joined = "-".join(parts)
    cleaned = _NOT_IN_SPDX_ID.sub("-", joined)
    if cleaned != joined:
        cleaned += "-" + hashlib.sha256(joined.encode()).hexdigest()[:8]
    return f"SPDXRef-{cleaned}"


def purl(package: InstalledPackage, os_release: Mapping[str, str]) -> str:
    vendor = (os_release.get("ID") or ("debian" if package.manager == "deb" else "rpm")).lower()
    release = os_release.get("VERSION_ID") or os_release.get("VERSION_CODENAME")
    qualifiers = {"arch": package.architecture}
    if package.epoch:
        qualifiers["epoch"] = package.epoch
    if release:
        qualifiers["distro"] = f"{vendor}-{release}"
    return str(PackageURL(type=package.manager, namespace=vendor, name=package.name.lower(),
                          version=package.version, qualifiers=qualifiers))


def sbom_document(facts: ImageFacts, created: datetime) -> Any:
    """The spdx-tools Document for `facts`; its namespace is derived from everything else in it."""
    builder = _DocumentBuilder(facts)
    packages, relationships, licences = builder.build()
    content = json.dumps([_facts_key(facts), created.isoformat()], sort_keys=True, default=str)
    namespace_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{NAMESPACE_PREFIX}/{content}")
    comment = "; ".join(facts.notes) or None
    creation = CreationInfo(
        spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=f"hotsauce image {facts.hostname}",
        document_namespace=f"{NAMESPACE_PREFIX}/{facts.hostname}-{namespace_id}",
        creators=[Actor(ActorType.TOOL, f"hotsauce-{facts.hotsauce_version}")], created=created,
        document_comment=comment)
    return Document(creation, packages=packages, relationships=relationships, extracted_licensing_info=licences)


def _facts_key(facts: ImageFacts) -> Any:
    return {"hostname": facts.hostname, "os": dict(facts.os_release), "packages": [vars(p) for p in facts.packages],
            "base": vars(facts.base), "modules": [vars(m) for m in facts.modules],
            "hotsauce": facts.hotsauce_version}


class _DocumentBuilder:
    """The packages, relationships and licence references of one document."""

    IMAGE_ID = "SPDXRef-image"

    def __init__(self, facts: ImageFacts) -> None:
        self.facts = facts
        self.licensing = spdx_licensing
        self.licence_refs: dict[str, str] = {}  # LicenseRef id -> the name it stands for

    def build(self) -> tuple[list[Any], list[Any], list[Any]]:
        image = self._image()
        contained = [self._installed(package) for package in self.facts.packages]
        sources = [*self._base(), *(self._module(index, m) for index, m in enumerate(self.facts.modules))]
        tool = self._hotsauce()
        relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image.spdx_id)]
        relationships += [Relationship(image.spdx_id, RelationshipType.CONTAINS, p.spdx_id) for p in contained]
        relationships += [Relationship(image.spdx_id, RelationshipType.GENERATED_FROM, p.spdx_id) for p in sources]
        relationships.append(Relationship(tool.spdx_id, RelationshipType.BUILD_TOOL_OF, image.spdx_id))
        licences = [ExtractedLicensingInfo(license_id=ref, license_name=name,
                                           extracted_text=f"The licence named {name!r} in the package's "
                                           "machine-readable copyright file (/usr/share/doc/PACKAGE/copyright).")
                    for ref, name in sorted(self.licence_refs.items())]
        return [image, *contained, *sources, tool], relationships, licences

    def _image(self) -> Any:
        release = self.facts.os_release
        return Package(self.IMAGE_ID, self.facts.hostname, SpdxNoAssertion(), files_analyzed=False,
                       version=release.get("VERSION_ID") or None,
                       summary=f"the image built by hotsauce: {release.get('PRETTY_NAME', 'an unknown OS')}",
                       primary_package_purpose=PackagePurpose.OPERATING_SYSTEM)

    def _installed(self, package: InstalledPackage) -> Any:
        ref = ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl",
                                 purl(package, self.facts.os_release))
        version = f"{package.epoch}:{package.version}" if package.epoch else package.version
        return Package(
            spdx_id(package.manager, package.name, package.architecture), package.name, SpdxNoAssertion(),
            version=version, files_analyzed=False, license_concluded=SpdxNoAssertion(),
            license_declared=self._licence(package.licence), copyright_text=SpdxNoAssertion(),
            source_info=f"built from {package.manager} source package {package.source} {package.source_version}",
            summary=f"{package.manager} package, architecture {package.architecture}",
            external_references=[ref])

    def _licence(self, stated: str | None) -> Any:
        if stated is None:
            return SpdxNoAssertion()
        text = spdx_licence_text(stated)
        try:
            expression = self.licensing.parse(text)
        except (ExpressionError, ParseError):  # text license_expression cannot parse
            return SpdxNoAssertion()
        if expression is None:
            return SpdxNoAssertion()
        known = self.licensing.validate(expression)
        for unknown in known.invalid_symbols:
            text = self._referenced(text, str(unknown))
        try:
            return self.licensing.parse(text)
        except (ExpressionError, ParseError):
            return SpdxNoAssertion()

    def _referenced(self, text: str, name: str) -> str:
        """`text` with the licence `name` that SPDX does not know as a LicenseRef (declared in the
        document: its text is only in the package's copyright file). An unknown exception takes
        its licence along: SPDX has no references to exceptions."""
        with_exception = re.search(rf"(\S+) WITH {re.escape(name)}(?![\w.+-])", text)
        whole = with_exception.group(0) if with_exception else name
        bare = whole.removeprefix("LicenseRef-").replace(" WITH ", "-with-")
        ref = "LicenseRef-" + _NOT_IN_SPDX_ID.sub("-", bare)
        self.licence_refs[ref] = bare
        return re.sub(rf"(?<![\w.+-]){re.escape(whole)}(?![\w.+-])", ref, text)

    def _base(self) -> list[Any]:
        base = self.facts.base
        if base.kind == "download":
            url = base.url or ""
            # A URL spdx-tools does not take as one (a file:// path, a bare address) stays in source_info.
            location = _location(url)
            checksums = [Checksum(ChecksumAlgorithm.SHA256, base.sha256)] if base.sha256 else []
            return [Package("SPDXRef-base", "base", location, files_analyzed=False, checksums=checksums,
                            source_info=f"the root tarball {url}", summary="hotsauce base: a root tarball")]
        details = ", ".join(f"{key} {value}" for key, value in sorted(base.details.items()))
        return [Package(spdx_id("base", suite.suite), f"debian {suite.suite}",
                        _location(f"{suite.uri}/dists/{suite.suite}/"), files_analyzed=False,
                        release_date=release_datetime(suite.release_date),
                        source_info=f"deb {suite.uri} {suite.suite} {' '.join(suite.components)}; "
                        f"Release date {suite.release_date}",
                        summary=f"hotsauce base: a Debian mirror suite ({details})")
                for suite in base.suites]

    def _module(self, index: int, module: ModuleFacts) -> Any:
        checksums = [Checksum(ChecksumAlgorithm.SHA256, module.sha256)] if module.sha256 else []
        refs = [ExternalPackageRef(ExternalPackageRefCategory.OTHER, "hotsauce-role-files-sha256",
                                   module.files_sha256)] if module.files_sha256 else []
        source = f"from {module.source}" if module.source else f"found at {module.origin}"
        return Package(spdx_id("module", str(index), module.kind, module.name), module.name, SpdxNoAssertion(),
                       version=module.version, files_analyzed=False, checksums=checksums,
                       external_references=refs, source_info=source,
                       summary=f"hotsauce module: {module.kind}")

    def _hotsauce(self) -> Any:
        version = self.facts.hotsauce_version
        ref = ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", f"pkg:pypi/hotsauce@{version}")
        return Package("SPDXRef-hotsauce", "hotsauce", SpdxNoAssertion(), version=version, files_analyzed=False,
                       external_references=[ref], summary="the image builder")


def validation_problems(document: Any) -> list[str]:
    return [message.validation_message for message in validate_full_spdx_document(document)]


def write_sbom(document: Any, path: Path) -> None:
    """The document as SPDX JSON at `path`, validated first (a document spdx-tools rejects is a bug here)."""
    if problems := validation_problems(document):
        raise StageFailed("sbom", f"the SBOM does not validate: {problems[0]} (and {len(problems) - 1} more)")
    data = DocumentConverter().convert(document)  # type: ignore[no-untyped-call]
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(partial, path)




def _location(url: str) -> str | SpdxNoAssertion:
    """`url` as a download location, or NOASSERTION where spdx-tools would not take it as one (a file://
    path, a bare address): the caller says the URL in words too."""
    return SpdxNoAssertion() if validate_download_location(url) else url
