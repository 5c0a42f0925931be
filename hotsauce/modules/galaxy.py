"""Roles and collections of a build's requirements.yml, installed by ansible-galaxy into the cache.

The cache entry is keyed by the file's content (and by the local tarballs
and folders it names, which may change under the same text), so an unchanged
requirements.yml costs nothing on the next build. ansible-galaxy never sees
the host's home or its global role and collection folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from hotsauce.config import read_yaml
from hotsauce.errors import CommandFailed, ConfigError
from hotsauce.events import Emit, Event
from hotsauce.host.proc import run
from hotsauce.modules.ansible_run import path_with_ansible
from hotsauce.store.cache import Cache

CACHE_KIND = "galaxy"
STAGE = "requirements"
# ansible-galaxy's words for a role it could not install.
_NOT_INSTALLED = re.compile(
    r"-\s+(?P<name>\S+?)\s+was NOT installed successfully:?\s*(?P<reason>.*)"
)


def install_requirements(
    requirements: Path, cache: Cache, emit: Emit, *, scratch: Path | None = None
) -> tuple[list[Path], list[Path]]:
    """ansible-galaxy roles and collections from a requirements.yml into the cache (keyed by
    the file's content), not the host's global paths. Returns (roles_dirs, collections_dirs).
    With the cache disabled they go to `scratch` (a folder of the build's own), and no cache
    is read or written. A role that cannot be installed raises ConfigError naming the
    requirements file and the role."""
    requirements = requirements.absolute()
    spec = read_requirements(requirements)
    if not cache.enabled:
        if scratch is None:
            raise ValueError("requirements without the cache need a scratch folder")
        entry = scratch / CACHE_KIND
        install_into(entry, requirements, spec, emit)
        return [entry / "roles"], [entry / "collections"]
    key = requirements_key(requirements, spec)
    with cache.locked(CACHE_KIND, key) as entry:
        if entry.is_dir():
            emit(Event("info", STAGE, f"roles and collections of {requirements} from the cache"))
        else:
            install_into(entry, requirements, spec, emit)
    return [entry / "roles"], [entry / "collections"]


def read_requirements(requirements: Path) -> dict[str, list[Any]]:
    """{roles: [...], collections: [...]}; the old form, a plain list, is a list of roles."""
    data = read_yaml(requirements)
    if data is None:
        return {"roles": [], "collections": []}
    if isinstance(data, list):
        return {"roles": data, "collections": []}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{requirements}: expected a list of roles or a mapping with roles, collections"
        )
    spec = {"roles": data.get("roles") or [], "collections": data.get("collections") or []}
    for kind, entries in spec.items():
        if not isinstance(entries, list):
            raise ConfigError(f"{requirements}: {kind}: expected a list")
    return spec


def local_sources(requirements: Path, spec: Mapping[str, list[Any]]) -> Iterator[Path]:
    """Tarballs and folders on this host that the requirements install from."""
    for entry in (*spec["roles"], *spec["collections"]):
        source = (
            entry.get("src") or entry.get("source") or entry.get("name")
            if isinstance(entry, dict)
            else entry
        )
        if not isinstance(source, str):
            continue
        source = source.removeprefix("file://").removeprefix("git+file://")
        path = (requirements.parent / source).expanduser()
        if "://" not in source and path.exists():
            yield path.absolute()


def requirements_key(requirements: Path, spec: Mapping[str, list[Any]]) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    for source in local_sources(requirements, spec):
        digest.update(str(source).encode())
        files = (
            [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        )
        for path in files:
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def install_into(
    entry: Path, requirements: Path, spec: Mapping[str, list[Any]], emit: Emit
) -> None:
    partial = Cache.temporary_name(entry)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "roles").mkdir(parents=True)
        (partial / "collections").mkdir()
        with tempfile.TemporaryDirectory(prefix="hotsauce-galaxy-") as home:
            env = galaxy_environment(Path(home))
            for kind in ("role", "collection"):
                if spec[f"{kind}s"]:
                    emit(Event("info", STAGE, f"installing the {kind}s of {requirements}"))
                    galaxy([kind, "install", "-r", requirements, "-p", partial / f"{kind}s"], requirements, env, kind)
        Cache.publish(partial, entry)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def installed_version(role: Path) -> str | None:
    """The version ansible-galaxy installed a role as (a git tag or commit, a Galaxy release), from
    the role's .galaxy_install_info or, for a collection's role, the collection's MANIFEST.json.
    None for a role ansible-galaxy did not install."""
    info = role / "meta" / ".galaxy_install_info"
    if info.is_file():
        try:
            data = yaml.safe_load(info.read_text())
        except yaml.YAMLError:
            return None
        version = data.get("version") if isinstance(data, dict) else None
        return str(version) if version else None
    manifest = role.parent.parent / "MANIFEST.json"
    if role.parent.name == "roles" and manifest.is_file():
        try:
            version = json.loads(manifest.read_text()).get("collection_info", {}).get("version")
        except (ValueError, AttributeError):
            return None
        return str(version) if version else None
    return None


def galaxy_environment(home: Path) -> dict[str, str]:
    config = home / "ansible.cfg"
    config.write_text("")
    return {
        **os.environ,
        "PATH": path_with_ansible(),
        "HOME": str(home),
        "ANSIBLE_HOME": str(home / ".ansible"),
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_NOCOLOR": "true",
    }


def galaxy(
    arguments: list[str | Path], requirements: Path, env: Mapping[str, str], kind: str
) -> None:
    try:
        # Relative sources in the file are relative to the file; `env`'s PATH finds the program.
        run(["ansible-galaxy", *arguments], cwd=requirements.parent, env=env)
    except CommandFailed as failure:
        raise ConfigError(f"{requirements}: {failed_requirement(failure, kind)}") from None


def failed_requirement(failure: CommandFailed, kind: str) -> str:
    text = failure.stderr
    if match := _NOT_INSTALLED.search(text):
        reason = match.group("reason").strip() or "no reason given"
        return f"{kind} {match.group('name')!r} cannot be installed: {reason}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[-1] if lines else f"ansible-galaxy exited with status {failure.status}"
    reason = re.sub(r"^(\[ERROR\]:|ERROR!)\s*", "", reason)
    return f"a {kind} cannot be installed: {reason}"
