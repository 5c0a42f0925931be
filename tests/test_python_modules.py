"""Python modules run in a child process: modify(name, root, cfg) as before, hotsauce untouched.

These need no root: the "image root" is a plain folder.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hotsauce.config import ModuleKind, ModuleRef
from hotsauce.errors import Cancelled, ModuleFailed
from hotsauce.host import cancel
from hotsauce.modules.python_run import run_python_module
from hotsauce.modules.resolve import ResolvedModule


def python_module(folder: Path, name: str, source: str) -> ResolvedModule:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return ResolvedModule(ModuleRef(ModuleKind.PYTHON, name), ModuleKind.PYTHON, path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "etc").mkdir(parents=True)
    return tmp_path / "root"


def signal_handlers() -> dict[int, Any]:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)}


# (what the module does, what of hotsauce it would change if it ran in hotsauce's process)
MEDDLERS: list[tuple[str, Callable[[], object]]] = [
    ("os.chdir('/')", os.getcwd),
    ("os.environ['PATH'] = '/nowhere'; os.environ['HOTSAUCE_MEDDLED'] = '1'", lambda: dict(os.environ)),
    ("signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGINT, signal.SIG_IGN);"
     " signal.signal(signal.SIGUSR1, lambda *a: None)", signal_handlers),
    ("sys.modules['json'] = None; sys.modules['hotsauce_meddled'] = sys; del sys.modules['pickle']",
     lambda: dict(sys.modules)),
]


@pytest.mark.parametrize(("action", "snapshot"), MEDDLERS, ids=["cwd", "environment", "signals", "sys.modules"])
def test_a_module_that_changes_its_process_does_not_change_hotsauce(
    tmp_path: Path, root: Path, action: str, snapshot: Callable[[], object]
) -> None:
    module = python_module(tmp_path, "meddler", f"""
        import os, signal, sys
        def modify(name, root, cfg):
            {action}
            open(os.path.join(root, "etc", "meddled"), "w").close()
    """)
    before = snapshot()
    run_python_module(module, root, {})
    assert (root / "etc" / "meddled").exists()  # it did run, and did what it does
    assert snapshot() == before


def test_modify_gets_name_root_and_a_cfg_whose_yaml_types_survive(tmp_path: Path, root: Path) -> None:
    cfg = yaml.safe_load("when: 2026-11-27\nat: 2026-11-27 08:00:00\nports: {80: http, 443: https}\n"
                         "ratio: 0.5\nflag: yes\nnothing: null\nblob: !!binary aG90\n")
    assert isinstance(cfg["when"], datetime.date) and isinstance(cfg["blob"], bytes)
    module = python_module(tmp_path, "typed", """
        import os, pickle
        def modify(name, root, cfg):
            with open(os.path.join(root, "etc", "seen"), "wb") as out:
                pickle.dump((name, root, cfg), out)
            cfg["ports"][80] = "changed"  # a copy: the caller's cfg stays as it was
    """)
    run_python_module(module, root, cfg)
    import pickle

    name, seen_root, seen_cfg = pickle.loads((root / "etc" / "seen").read_bytes())
    assert (name, seen_root, seen_cfg) == ("typed", str(root), cfg)
    assert isinstance(seen_root, str) and cfg["ports"][80] == "http"


def test_the_keys_a_module_declares_reach_cfg_with_their_defaults(tmp_path: Path, root: Path) -> None:
    module = python_module(tmp_path, "motd", """
        import os
        CONFIG_KEYS = {
            "motd_text": {"type": "string", "default": "hello", "help": "the text"},
            "motd_file": {"type": "string", "default": "/etc/motd", "help": "where"},
        }
        def modify(name, root, cfg):
            with open(os.path.join(root, cfg["motd_file"].lstrip("/")), "w") as out:
                out.write(cfg["motd_text"])
    """)
    run_python_module(module, root, {"motd_text": "from build.yaml"})
    assert (root / "etc" / "motd").read_text() == "from build.yaml"


def test_a_failure_is_one_line_naming_the_module_the_error_and_its_last_line(tmp_path: Path, root: Path) -> None:
    module = python_module(tmp_path, "explode", """
        def helper():
            raise RuntimeError("the disk is full of hot sauce")

        def modify(name, root, cfg):
            helper()
    """)
    with pytest.raises(ModuleFailed) as caught:
        run_python_module(module, root, {})
    assert str(caught.value) == ("module 'explode' failed: RuntimeError: the disk is full of hot sauce "
                                 '(at explode.py:3: raise RuntimeError("the disk is full of hot sauce"))')


def test_a_module_that_fails_to_load_is_named(tmp_path: Path, root: Path) -> None:
    module = python_module(tmp_path, "noimport", """
        import no_such_library_anywhere
        def modify(name, root, cfg):
            pass
    """)
    with pytest.raises(ModuleFailed, match=r"module 'noimport' failed: cannot load .*noimport.py: "
                                           r"ModuleNotFoundError: .*no_such_library_anywhere.* \(at noimport.py:2"):
        run_python_module(module, root, {})


@pytest.mark.parametrize(("body", "reason"), [
    ("sys.exit(3)", "SystemExit: 3 (at quits.py:4: sys.exit(3))"),
    ("os._exit(3)", "its process ended before modify returned (exit status 3)"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "its process ended before modify returned (killed by SIGKILL)"),
])
def test_a_module_that_ends_its_process_fails_with_the_reason(tmp_path: Path, root: Path, body: str,
                                                               reason: str) -> None:
    module = python_module(tmp_path, "quits", f"""
        import os, signal, sys
        def modify(name, root, cfg):
            {body}
    """)
    with pytest.raises(ModuleFailed) as caught:
        run_python_module(module, root, {})
    assert str(caught.value) == f"module 'quits' failed: {reason}"


def test_a_modules_output_streams_to_hotsauces_own_output(tmp_path: Path, root: Path,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    module = python_module(tmp_path, "talker", """
        import sys
        def modify(name, root, cfg):
            print("to stdout from", name)
            print("to stderr", file=sys.stderr)
    """)
    print("before the module", flush=True)
    run_python_module(module, root, {})
    out, err = capfd.readouterr()
    assert out == "before the module\nto stdout from talker\n" and err == "to stderr\n"


# A build in miniature: the ledger and the signal handling of a real build around one module.
HARNESS = """
import sys
from pathlib import Path
from hotsauce.config import ModuleKind, ModuleRef
from hotsauce.host import ledger
from hotsauce.host.signals import interruptible
from hotsauce.modules.python_run import run_python_module
from hotsauce.modules.resolve import ResolvedModule

module = ResolvedModule(ModuleRef(ModuleKind.PYTHON, "sleeper"), ModuleKind.PYTHON, Path(sys.argv[1]))
with interruptible(), ledger.recording(Path(sys.argv[2])):
    run_python_module(module, Path(sys.argv[3]), {})
"""

SLEEPER = """
import os, time
def modify(name, root, cfg):
    with open(os.path.join(root, "pid.partial"), "w") as out:
        out.write(str(os.getpid()))
    os.rename(os.path.join(root, "pid.partial"), os.path.join(root, "pid"))
    time.sleep(600)
"""


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_the_module_and_release_everything(tmp_path: Path, root: Path,
                                                                    sig: signal.Signals) -> None:
    module = python_module(tmp_path, "sleeper", SLEEPER)
    run_dir, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, module.path, run_dir, root],
                               env={**os.environ, "TMPDIR": str(scratch)}, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (root / "pid").exists())
        child = int((root / "pid").read_text())
        held = json.loads((run_dir / f"{harness.pid}.json").read_text())["holdings"]
        assert {"kind": "process", "value": str(child)} in [
            {k: h[k] for k in ("kind", "value")} for h in held]
        harness.send_signal(sig)
        _, stderr = harness.communicate(timeout=60)
    finally:
        if harness.poll() is None:
            harness.kill()
    assert harness.returncode != 0 and f"Interrupted: interrupted by {sig.name}" in stderr
    wait_for(lambda: not process_exists(child), seconds=10)
    assert list(run_dir.iterdir()) == []  # the ledger went with the build
    assert list(scratch.iterdir()) == []  # and so did the module's temporary folder


def test_a_cancel_of_the_build_stops_a_running_module(tmp_path: Path, root: Path) -> None:
    module = python_module(tmp_path, "sleeper", SLEEPER)
    asked = time.monotonic() + 3600.0

    def cancel_requested() -> bool:
        return time.monotonic() >= asked

    started = time.monotonic()
    with cancel.cancellable(cancel_requested), pytest.raises(Cancelled):
        def ask_once_running() -> None:
            nonlocal asked
            wait_for(lambda: (root / "pid").exists())
            asked = time.monotonic()

        waiter = threading.Thread(target=ask_once_running)
        waiter.start()
        try:
            run_python_module(module, root, {})
        finally:
            waiter.join()
    assert time.monotonic() - started < 60  # not the module's 600 s
    assert not process_exists(int((root / "pid").read_text()))
