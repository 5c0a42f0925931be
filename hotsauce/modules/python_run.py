"""Python modules: a file with `def modify(name, root, cfg)`, run in a child process.

`name` is the module's name as listed, `root` the mounted root's path (a
str, as it always was), `cfg` a copy of the build configuration with the
defaults of the keys the module declares, so a module cannot change what
later modules see. Raising fails the build. Module authors reach paths
inside the image through `hotsauce.rootpath.inside(root, path)`, which never
leaves the root, and run the image's programs through
`hotsauce.modules.sandbox.run_in_image(root, argv)`, in the same sandbox as
Ansible tasks (modify itself runs on the build host, as the contract says).

The module runs in a fresh interpreter (hotsauce.modules.python_child), not
in hotsauce's: whatever it does to its working directory, environment,
signal handlers or sys.modules stays in its own process, and a fork of
hotsauce (which has threads) could deadlock. The child streams to hotsauce's
own stdout and stderr, is recorded in the ledger while it runs, and is
stopped with its process group on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from hotsauce.config import NOTHING
from hotsauce.errors import ModuleFailed
from hotsauce.host import cancel, ledger
from hotsauce.host.proc import child_process
from hotsauce.modules.resolve import ResolvedModule, python_module_keys

CHILD_MODULE = "hotsauce.modules.python_child"


def run_python_module(module: ResolvedModule, root: Path, cfg: Mapping[str, Any]) -> None:
    """Run the module's modify(name, root, cfg) in a child and wait for it; ModuleFailed if it fails."""
    with ledger.temporary_folder("hotsauce-module-") as folder:
        _run_in_child(module, root, cfg_for(module, cfg), folder)


def cfg_for(module: ResolvedModule, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The build configuration with the defaults of the keys the module declares."""
    defaults = {key.name: key.default for key in python_module_keys(module.path, str(module.path))
                if key.default is not NOTHING}
    return {**defaults, **cfg}


def _run_in_child(module: ResolvedModule, root: Path, cfg: Mapping[str, Any], folder: Path) -> None:
    payload, result = folder / "payload.pickle", folder / "result.json"
    payload.write_bytes(pickle.dumps({
        "path": str(module.path), "name": module.name, "root": str(root), "cfg": dict(cfg), "result": str(result),
    }))
    # What hotsauce printed so far comes before what the module prints.
    sys.stdout.flush()
    sys.stderr.flush()
    with child_process([sys.executable, "-m", CHILD_MODULE, payload]) as process:
        status = _wait_cancellable(process)
    if result.is_file():
        outcome = json.loads(result.read_text())
        if not outcome["ok"]:
            raise ModuleFailed(module.name, outcome["error"])
        return
    raise ModuleFailed(module.name, f"its process ended before modify returned ({_describe_status(status)})")


def _wait_cancellable(process: subprocess.Popen[bytes]) -> int:
    """The module's exit status; a cancel of the build stops it (child_process stops the group)."""
    while True:
        with suppress(subprocess.TimeoutExpired):
            return process.wait(timeout=cancel.POLL_SECONDS)
        cancel.check()  # outside the except: a check while an exception is handled stands down


def _describe_status(status: int) -> str:
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"
