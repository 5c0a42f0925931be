"""Debian bases: bootstrapped with mmdebstrap from a mirror, kept in the cache.

A base is keyed by everything that shapes it, including the dates of the
mirror's Release files, so a mirror that moved on is noticed. A cached base
is a tar.zst unpacked straight into the image's root; a bootstrap writes the
root first and then archives it into the cache under a temporary name. The
.deb files a bootstrap downloads are kept in the cache too (outside the
image) and handed to the next bootstrap, which then downloads only what it
lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotsauce.bases.apt_sources import MirrorSources, SourceEntry, host_mirror
from hotsauce.bases.bootstrap_hooks import RECIPE, bootstrap_hooks
from hotsauce.config import DebianBase
from hotsauce.errors import MirrorUnreachable
from hotsauce.events import Emit, Event
from hotsauce.host.proc import run
from hotsauce.store import snapshots
from hotsauce.store.cache import Cache

STAGE = "base"
BASES = "bases"  # cache kind of bootstrapped bases
DEBS = "debs"  # cache kind of downloaded .deb files, one pool per architecture

# What a bootable image needs besides the variant: a kernel and an
# initramfs, systemd as init, device handling, console login, DHCP
# networking (ifupdown, whose dhclient also writes resolv.conf), sudo, and
# python3 so that Ansible modules run in the image.
BOOTABLE_PACKAGES = (
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "login",
    "passwd",
    "iproute2",
    "ifupdown",
    "isc-dhcp-client",
    "sudo",
    "python3",
    # Ansible's apt module installs it on first use, several seconds per build.
    "python3-apt",
    # initramfs-tools compresses with zstd (its COMPRESS=zstd) and falls back to gzip, with a
    # warning, where zstd is missing: the initramfs is made in 6.8-7.2 s instead of 7.8 s, and is
    # 13 MB instead of 15 MB.
    "zstd",
)

# A Release file's Date field is in its first lines; this is plenty.
RELEASE_HEAD_BYTES = 4096
RELEASE_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class BootstrapPlan:
    """A DebianBase made concrete: the exact sources and packages of one bootstrap."""

    spec: DebianBase
    sources: tuple[SourceEntry, ...]
    packages: tuple[str, ...]

    def key(self, release_dates: Mapping[str, str]) -> dict[str, Any]:
        """Everything that shapes the base; equal keys give equal bases."""
        return {
            "suite": self.spec.suite,
            "architecture": self.spec.architecture,
            "variant": self.spec.variant,
            "bootable": self.spec.bootable,
            "include": sorted(self.spec.include),
            "recipe": RECIPE,
            "snapshot": snapshots.FORMAT,
            "sources": [source_line(s) for s in self.sources],
            "release_dates": dict(release_dates),
        }


def plan_bootstrap(spec: DebianBase, mirror: MirrorSources | None = None) -> BootstrapPlan:
    """The sources and packages for `spec`; the host's mirror when the spec names none."""
    if spec.mirror is not None:
        # A mirror the user names is used alone: its companions cannot be guessed.
        sources: tuple[SourceEntry, ...] = (
            SourceEntry(spec.mirror.rstrip("/"), spec.suite, ("main",)),
        )
    else:
        sources = (mirror or host_mirror()).entries_for(spec.suite)
    packages = (BOOTABLE_PACKAGES if spec.bootable else ()) + tuple(spec.include)
    return BootstrapPlan(spec, sources, tuple(dict.fromkeys(packages)))


def source_line(entry: SourceEntry) -> str:
    return f"deb {entry.uri} {entry.suite} {' '.join(entry.components)}"


def entry_name(key: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"debian-{key['suite']}-{key['architecture']}-{digest}.tar.zst"


@dataclass(frozen=True)
class PlannedBase:
    """A Debian base with its cache key: the mirror's Release dates read once per build."""

    plan: BootstrapPlan
    key: dict[str, Any]

    @property
    def entry_name(self) -> str:
        return entry_name(self.key)


def plan_base(spec: DebianBase) -> PlannedBase:
    plan = plan_bootstrap(spec)
    return PlannedBase(plan, plan.key(release_dates(plan.sources)))


def provide_debian_base(
    spec: DebianBase, root: Path, cache: Cache, emit: Emit, planned: PlannedBase | None = None
) -> None:
    """Fill the empty `root` with the Debian base `spec`, from the cache when it holds it.

    `root` may contain lost+found. The base keeps its apt lists (so modules
    can install packages without fetching them again); the pipeline's
    scrub removes them at the end. `planned` is `plan_base(spec)` when the
    caller has it already.
    """
    if not cache.enabled:
        emit(Event("info", STAGE, "base bootstrapped: the cache is disabled", {"cached": False}))
        bootstrap(plan_bootstrap(spec), root, deb_pool=None)
        return
    planned = planned or plan_base(spec)
    key, name = planned.key, planned.entry_name
    with cache.locked(BASES, name) as entry:
        if entry.is_file():
            if snapshots.unpack(entry, root):
                emit(
                    Event(
                        "info",
                        STAGE,
                        f"base served from the cache ({name})",
                        {"cached": True, "entry": str(entry)},
                    )
                )
                return
            reason = f"the cached base {name} was cut short"
        else:
            reason = miss_reason(cache, key)
        emit(
            Event(
                "info",
                STAGE,
                f"base bootstrapped: {reason}",
                {"cached": False, "reason": reason, "entry": str(entry)},
            )
        )
        bootstrap(planned.plan, root, deb_pool=cache.folder(DEBS) / spec.architecture)
        snapshots.store(root, entry, key)


def miss_reason(cache: Cache, key: Mapping[str, Any]) -> str:
    """Why the cache has no base for `key`: none like it, or what changed since the closest one."""
    best: list[str] | None = None
    for entry in cache.entries(BASES):
        other = entry.key
        if not other or other.get("suite") != key["suite"]:
            continue
        if other.get("architecture") != key["architecture"]:
            continue
        changed = [field for field in key if other.get(field) != key[field]]
        if best is None or len(changed) < len(best):
            best = changed
    if not best:
        return f"no cached {key['suite']} base"
    return "the key changed (" + ", ".join(_describe_change(field) for field in best) + ")"


def _describe_change(field: str) -> str:
    described = {"release_dates": "the mirror's Release date", "recipe": "hotsauce's bootstrap recipe",
                 "snapshot": "hotsauce's snapshot format"}
    return described.get(field, field)


# --- the mirror's Release dates ---------------------------------------------


def release_dates(sources: tuple[SourceEntry, ...]) -> dict[str, str]:
    """The Date of each source's Release file, by `URI SUITE`."""
    return {f"{s.uri} {s.suite}": release_date(s.uri, s.suite) for s in sources}


def release_date(uri: str, suite: str) -> str:
    """The Date field of the suite's InRelease (or Release) file on the mirror."""
    problems = []
    for name in ("InRelease", "Release"):
        url = f"{uri}/dists/{suite}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=RELEASE_TIMEOUT_SECONDS) as response:
                head = response.read(RELEASE_HEAD_BYTES).decode(errors="replace")
        except (urllib.error.URLError, OSError) as error:
            problems.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        if match := re.search(r"^Date:\s*(.+)$", head, re.MULTILINE):
            return match.group(1).strip()
        problems.append(f"{url}: no Date field")
    raise MirrorUnreachable(f"cannot read the Release date of {suite}: {problems[-1]}")


# --- bootstrapping ------------------------------------------------------------


def bootstrap(plan: BootstrapPlan, root: Path, deb_pool: Path | None) -> None:
    """mmdebstrap straight into `root`; with a pool, .debs come from and go back to it."""
    spec = plan.spec
    argv: list[str | Path] = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={spec.variant}",
        f"--architectures={spec.architecture}",
        # The pipeline removes the lists after the modules, which may install packages.
        "--skip=cleanup/apt/lists",
        *bootstrap_hooks(spec.variant.value, plan.packages),
    ]
    if plan.packages:
        argv.append("--include=" + ",".join(plan.packages))
    with _deb_exchange(deb_pool) as exchange:
        if exchange is not None:
            incoming, pool = exchange
            # mmdebstrap splits special hooks into words as a shell would.
            argv += [
                # Keep what the essential step downloaded, so sync-out saves it too.
                "--skip=essential/unlink",
                '--setup-hook=mkdir -p "$1/var/cache/apt/archives"',
                f"--setup-hook=sync-in {shlex.quote(str(pool))} /var/cache/apt/archives/",
                f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(incoming))}",
            ]
        argv += [spec.suite, root, *(source_line(s) for s in plan.sources)]
        run(argv)
        if exchange is not None:
            _adopt_debs(*exchange)


@contextmanager
def _deb_exchange(pool: Path | None) -> Iterator[tuple[Path, Path] | None]:
    """(incoming folder, pool): mmdebstrap reads the pool and writes what it had into incoming."""
    if pool is None:
        yield None
        return
    pool.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=pool.parent))
    try:
        yield incoming, pool
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def _adopt_debs(incoming: Path, pool: Path) -> None:
    """Move new .debs into the pool one by one (rename: readers never see half a file)."""
    for deb in incoming.glob("*.deb"):
        target = pool / deb.name
        if not target.exists():
            os.replace(deb, target)
