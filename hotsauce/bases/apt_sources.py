"""The Debian mirror this host's apt uses, read from its sources.

hotsauce never names a mirror itself: the default mirror of a Debian base is
whatever the build host's apt uses (deb822 `*.sources` files and one-line
`sources.list` / `sources.list.d/*.list`), together with the updates and
security suites the host uses, so an image gets the same fixes the host does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hotsauce.errors import ConfigError

# Suites that have no -updates or -security companions.
_ROLLING_SUITES = frozenset({"sid", "unstable", "experimental", "rc-buggy"})


@dataclass(frozen=True)
class SourceEntry:
    """One (type, URI, suite) of an apt source, with its components."""

    uri: str
    suite: str
    components: tuple[str, ...]


@dataclass(frozen=True)
class MirrorSources:
    """The host's Debian mirror and the companion suites it uses.

    `updates` says the host uses SUITE-updates on the main mirror;
    `security_uri` is where it gets SUITE-security, None when it does not.
    """

    uri: str
    components: tuple[str, ...] = ("main",)
    updates: bool = False
    security_uri: str | None = None

    def entries_for(self, suite: str) -> tuple[SourceEntry, ...]:
        """The sources a base of `suite` is built from: the suite and its companions."""
        entries = [SourceEntry(self.uri, suite, self.components)]
        if suite not in _ROLLING_SUITES:
            if self.updates:
                entries.append(SourceEntry(self.uri, f"{suite}-updates", self.components))
            if self.security_uri:
                entries.append(SourceEntry(self.security_uri, f"{suite}-security", self.components))
        return tuple(entries)


def host_mirror(sources_dir: Path = Path("/etc/apt")) -> MirrorSources:
    """The Debian mirror(s) this host's apt uses.

    Reads deb822 `sources.list.d/*.sources` and one-line `sources.list` and
    `sources.list.d/*.list`. Raises ConfigError when the host has none.
    """
    entries = list(read_host_entries(sources_dir))
    main = _main_entry(entries)
    if main is None:
        raise ConfigError(
            f"{sources_dir}: this host's apt sources name no Debian mirror;"
            " set base.debian.mirror in build.yaml"
        )
    suite = main.suite
    updates = any(e.uri == main.uri and e.suite == f"{suite}-updates" for e in entries)
    security = next((e for e in entries if _is_security_of(e.suite, suite)), None)
    return MirrorSources(
        uri=main.uri,
        components=main.components,
        updates=updates,
        security_uri=security.uri if security else None,
    )


def read_host_entries(sources_dir: Path) -> Iterator[SourceEntry]:
    """Every enabled binary (`deb`) source of the host, in apt's reading order."""
    one_line_files = [sources_dir / "sources.list"]
    parts = sources_dir / "sources.list.d"
    if parts.is_dir():
        one_line_files += sorted(parts.glob("*.list"))
    for path in one_line_files:
        if path.is_file():
            yield from parse_one_line(path.read_text())
    if parts.is_dir():
        for path in sorted(parts.glob("*.sources")):
            yield from parse_deb822(path.read_text())


def parse_one_line(text: str) -> Iterator[SourceEntry]:
    """Entries of a one-line sources.list: `deb [options] URI SUITE COMPONENT...`."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options such as [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            yield SourceEntry(_clean_uri(words[1]), words[2], tuple(words[3:]))


def parse_deb822(text: str) -> Iterator[SourceEntry]:
    """Entries of a deb822 .sources file; stanzas with `Enabled: no` are skipped."""
    for stanza in control_stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        components = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            for suite in stanza.get("suites", "").split():
                yield SourceEntry(_clean_uri(uri), suite, components)


def control_stanzas(text: str) -> Iterator[dict[str, str]]:
    """The stanzas of a Debian control-format text (deb822 sources, dpkg's status): field names
    lowered, continuation lines joined with a space, comment lines skipped."""
    stanza: dict[str, str] = {}
    field = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, field = {}, ""
        elif line[0] in " \t" and field:
            stanza[field] += " " + line.strip()  # a continuation line
        elif ":" in line:
            name, value = line.split(":", 1)
            field = name.strip().lower()
            stanza[field] = value.strip()
    if stanza:
        yield stanza


def _clean_uri(uri: str) -> str:
    return uri.rstrip("/")


def _is_pocket(suite: str) -> bool:
    return "-" in suite or "/" in suite


def _is_security_of(candidate: str, suite: str) -> bool:
    return candidate in (f"{suite}-security", f"{suite}/updates")


def _main_entry(entries: Iterable[SourceEntry]) -> SourceEntry | None:
    """The host's Debian archive among its sources.

    A host may list third-party repositories too; the Debian archive is the
    one whose suite has -updates or -security companions, else the first
    plain suite with a `main` component.
    """
    entries = list(entries)
    candidates = [e for e in entries if not _is_pocket(e.suite) and "main" in e.components]
    suites = {e.suite for e in entries}
    for entry in candidates:
        companions = {f"{entry.suite}-updates", f"{entry.suite}-security", f"{entry.suite}/updates"}
        if companions & suites:
            return entry
    return candidates[0] if candidates else None
