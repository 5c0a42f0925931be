"""What `hotsauce fleet` is asked to do, checked before any host is touched."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotsauce.config import DEFAULT_CONFIG_NAME, load_config
from hotsauce.errors import ConfigError
from hotsauce.modules.ansible_run import path_with_ansible

BUILDERS_GROUP = "builders"
PARALLEL_VAR = "hotsauce_parallel_builds"
# What of a build's folder goes to the builder: what `hotsauce build` reads from it.
BUILD_ITEMS = (DEFAULT_CONFIG_NAME, "python_modules", "roles", "playbooks", "requirements.yml")


@dataclass(frozen=True)
class BuildSpec:
    name: str
    folder: Path
    items: tuple[str, ...]


@dataclass(frozen=True)
class BuilderSpec:
    name: str
    parallel: int


def existing(path: Path, what: str) -> Path:
    """An absolute controller-side path that exists, or the one line that says it does not."""
    if not path.exists():
        raise ConfigError(f"{what} {path}: no such file or folder")
    return path.resolve()


def read_builds(folders: Sequence[Path]) -> list[BuildSpec]:
    """Each folder a build named after it, with a build.yaml that loads; names are unique."""
    builds: dict[str, BuildSpec] = {}
    for given in folders:
        folder = existing(given, "build folder")
        config = folder / DEFAULT_CONFIG_NAME
        if not config.is_file():
            raise ConfigError(f"build folder {given}: has no {DEFAULT_CONFIG_NAME}")
        load_config(config)
        name = folder.name
        if name in builds:
            raise ConfigError(f"build folder {given}: a second build named {name!r} "
                              f"(the first is {builds[name].folder}); each set goes to OUTDIR/NAME")
        builds[name] = BuildSpec(name, folder, tuple(item for item in BUILD_ITEMS if (folder / item).exists()))
    return list(builds.values())


def read_builders(inventory: Path) -> list[BuilderSpec]:
    """The hosts of the inventory's `builders` group and how many builds each runs at once,
    as Ansible reads the inventory (any format it knows, its variables merged)."""
    listing = inventory_listing(existing(inventory, "inventory"))
    hosts = (listing.get(BUILDERS_GROUP) or {}).get("hosts") or []
    if not hosts:
        raise ConfigError(f"inventory {inventory}: no group {BUILDERS_GROUP!r} with hosts; "
                          "hotsauce fleet builds on the hosts of that group")
    hostvars = (listing.get("_meta") or {}).get("hostvars") or {}
    return [BuilderSpec(host, parallel_builds(inventory, host, hostvars.get(host) or {})) for host in hosts]


def parallel_builds(inventory: Path, host: str, variables: dict[str, Any]) -> int:
    value = variables.get(PARALLEL_VAR, 1)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"inventory {inventory}: host {host}: {PARALLEL_VAR} must be a whole number "
                          f"from 1, not {value!r}")
    return value


def inventory_listing(inventory: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["ansible-inventory", "-i", str(inventory), "--list"], capture_output=True, text=True,
        env={**os.environ, "PATH": path_with_ansible()},
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ConfigError(f"inventory {inventory}: {lines[-1] if lines else 'ansible-inventory failed'}")
    listing: dict[str, Any] = json.loads(result.stdout)
    return listing
