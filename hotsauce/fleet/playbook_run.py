"""One run of a fleet playbook against one builder, through ansible-runner, and what came of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hotsauce.modules.ansible_run import path_with_ansible, result_message
from hotsauce.modules.builtins import builtin_folder


class Ending(Enum):
    DONE = "done"
    FAILED = "failed"  # a task failed on the builder
    UNREACHABLE = "unreachable"  # SSH to the builder failed
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class PlaybookResult:
    ending: Ending
    message: str = ""


def fleet_playbook(name: str) -> Path:
    return builtin_folder("playbooks") / name


def run_playbook(playbook: Path, inventory: Path, builder: str, extravars: Mapping[str, Any],
                 cancelled: Callable[[], bool]) -> PlaybookResult:
    """The playbook limited to `builder`. ansible-runner's private folder is a temporary one:
    its artifacts record this process's environment, which may hold secrets."""
    import ansible_runner  # slow import: only when needed

    with tempfile.TemporaryDirectory(prefix="hotsauce-fleet-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            playbook=str(playbook),
            inventory=str(inventory),
            limit=builder,
            extravars=dict(extravars),
            envvars={"PATH": path_with_ansible(), "ANSIBLE_NOCOLOR": "1", **connection_defaults()},
            cancel_callback=cancelled,
            suppress_env_files=True,
            quiet=True,
        )
        return result_of(str(runner.status), list(runner.events))


def connection_defaults() -> dict[str, str]:
    """Ansible settings for the builders, each overridden by the user's environment (and by
    the inventory, which Ansible reads over these)."""
    defaults = {
        # ansible-runner turns host key checking off unless told: a builder's key is checked,
        # as Ansible does by default.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # A module goes over the SSH connection that runs it: one connection per task instead
        # of three, and no terminal is asked of the builder (a build needs none).
        "ANSIBLE_PIPELINING": "True",
    }
    return {name: os.environ.get(name, value) for name, value in defaults.items()}


def result_of(status: str, events: list[dict[str, Any]]) -> PlaybookResult:
    """The first unreachable or failed task decides; a run that ended otherwise badly says so."""
    for event in events:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "runner_on_unreachable":
            return PlaybookResult(Ending.UNREACHABLE, result_message(data.get("res") or {}))
        if kind == "runner_on_failed" and not data.get("ignore_errors"):
            task = str(data.get("task") or "").strip()
            return PlaybookResult(Ending.FAILED, f"{task}: {result_message(data.get('res') or {})}")
    if status == "successful":
        return PlaybookResult(Ending.DONE)
    if status == "canceled":
        return PlaybookResult(Ending.CANCELLED, "cancelled")
    errors = [str(e.get("stdout") or "").strip() for e in events if "ERROR!" in str(e.get("stdout") or "")]
    return PlaybookResult(Ending.FAILED, errors[-1].splitlines()[0] if errors else f"ansible-runner: {status}")
