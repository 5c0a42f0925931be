"""Shells inside an image root, for a person: `build --shell-on-failure`, `--shell-before`, `hotsauce shell`.

The shell enters the root the way every command in the image does
(hotsauce.modules.sandbox.command_in_image), with the environment Ansible's
commands get there. On a terminal it gets a process group of its own and
becomes the terminal's foreground group, so Ctrl-C reaches the shell and
what it runs, never hotsauce; hotsauce ignores SIGINT meanwhile and takes
the terminal back afterwards. SIGTERM to hotsauce still unwinds the build:
the shell is a recorded child process, stopped with its group on the way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from hotsauce.errors import ConfigError, HotsauceError, Interrupted
from hotsauce.host import cancel, ledger
from hotsauce.host.proc import stop_process_group
from hotsauce.modules.resolve import ResolvedModule
from hotsauce.modules.sandbox import command_in_image
from hotsauce.rootpath import inside

PROMPT = r"(hotsauce {what}) \w # "


def require_terminal(flag: str) -> None:
    """Refuse a shell flag before anything is allocated when no person can type into it."""
    if not sys.stdin.isatty():
        raise ConfigError(f"{flag}: needs a terminal on stdin to open a shell in the image (none here)")


def same_module(listed: str, wanted: str) -> bool:
    """`-` and `_` are interchangeable in module names, as everywhere in build.yaml."""
    return listed.replace("-", "_") == wanted.replace("-", "_")


def check_shell_before(modules: Sequence[ResolvedModule], wanted: str | None) -> None:
    if wanted is not None and not any(same_module(module.name, wanted) for module in modules):
        listed = ", ".join(module.name for module in modules) or "none"
        raise ConfigError(f"--shell-before {wanted}: no such module in the build (its modules: {listed})")


def split_before(runs: Sequence[Sequence[ResolvedModule]],
                 wanted: str | None) -> tuple[list[list[ResolvedModule]], int]:
    """The runs with `wanted` starting a run of its own (consecutive Ansible modules share a run,
    and the shell opens between runs), and how many runs come before it: only those may be served
    from or stored in the module cache, since what a person does in the shell is in no key."""
    split: list[list[ResolvedModule]] = []
    before = len(runs)
    for run in runs:
        at = next((i for i, module in enumerate(run) if wanted and same_module(module.name, wanted)), None)
        if at is None:
            split.append(list(run))
            continue
        if at:
            split.append(list(run[:at]))
        before = min(before, len(split))
        split.append(list(run[at:]))
    return split, before


def shell_environment(prompt: str) -> dict[str, str]:
    # Imported here: the plugin module brings ansible with it, which only a shell needs.
    from hotsauce.modules.ansible_plugins.connection.hotsauce_chroot import IMAGE_ENVIRONMENT

    return {**IMAGE_ENVIRONMENT, "TERM": os.environ.get("TERM", "linux"), "PS1": prompt}


def interactive_shell(root: Path) -> list[str]:
    """bash without the image's rc files (they would replace the prompt), or the image's sh."""
    if inside(root, "/bin/bash").is_file():
        return ["/bin/bash", "--norc", "--noprofile", "-i"]
    return ["/bin/sh", "-i"]


def run_in_image(root: Path, argv: Sequence[str] | None, *, banner: str = "", prompt: str = "") -> int:
    """`argv` (by default an interactive shell) inside the image root, on hotsauce's own stdin,
    stdout and stderr; its exit status. The root must be prepared (hotsauce.modules.chroot)."""
    terminal = sys.stdin.isatty()
    if argv is None:
        argv = interactive_shell(root) if terminal else ["/bin/sh"]
    if banner:
        print(banner, file=sys.stderr, flush=True)
    sys.stdout.flush()
    # SIGINT is ignored only once the shell is started: it would inherit the ignoring, and pass it on.
    with _shell_process(command_in_image(root, argv), shell_environment(prompt), terminal) as process, \
            _sigint_ignored():
        return _wait(process)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C is for the shell: hotsauce ignores it while the shell runs (SIGTERM still unwinds)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _shell_process(argv: list[str], env: dict[str, str], terminal: bool) -> Iterator[subprocess.Popen[bytes]]:
    """The shell in a process group of its own, recorded, the terminal's foreground group while it runs;
    stopped with its group on the way out, and the terminal given back to hotsauce."""
    # Not a new session (child_process's way): the shell must keep hotsauce's terminal as its own.
    process = subprocess.Popen(argv, env=env, cwd="/", process_group=0)
    with ledger.held_process(process.pid):
        try:
            if terminal:
                _give_terminal(process.pid)
            yield process
        finally:
            stop_process_group(process)
            if terminal:
                _give_terminal(os.getpgrp())


def _give_terminal(pgid: int) -> None:
    """Make `pgid` the terminal's foreground group. A process outside the foreground group that
    does this is sent SIGTTOU, hence ignored meanwhile; a shell that stopped itself waiting for
    the terminal (SIGTTIN) is woken."""
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with suppress(OSError):  # the terminal went away: nothing to give
            os.tcsetpgrp(sys.stdin.fileno(), pgid)
    finally:
        signal.signal(signal.SIGTTOU, previous)
    if pgid != os.getpgrp():
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT)


def _wait(process: subprocess.Popen[bytes]) -> int:
    """The shell's exit status; a library caller's cancel ends it. A shell killed by a signal
    answers as a shell does, 128 plus the signal."""
    while True:
        with suppress(subprocess.TimeoutExpired):
            status = process.wait(timeout=cancel.POLL_SECONDS)
            return 128 - status if status < 0 else status
        cancel.check()


# --- the build's hooks ------------------------------------------------------------


def shell_before(root: Path, run: Sequence[ResolvedModule], wanted: str | None, log: Path) -> None:
    """With --shell-before: the shell, when `run` starts with the named module."""
    if wanted is None or not same_module(run[0].name, wanted):
        return
    banner = (f"hotsauce: a shell in the image root, before module {run[0].name} runs\n"
              f"hotsauce: the build's log: {log}\n"
              "hotsauce: exit the shell to go on with the build")
    run_in_image(root, None, banner=banner, prompt=PROMPT.format(what=f"before {run[0].name}"))


@contextmanager
def shell_on_failure(root: Path, run: Sequence[ResolvedModule], enabled: bool, log: Path) -> Iterator[None]:
    """With --shell-on-failure: when the run fails, the shell in the root as the run left it,
    before anything is released; the failure then goes on as it would have."""
    try:
        yield
    except HotsauceError as error:
        if not enabled or isinstance(error, Interrupted):
            raise
        names = ", ".join(module.name for module in run)
        banner = (f"hotsauce: module {names} failed: {error}\n"
                  f"hotsauce: the build's log: {log}\n"
                  f"hotsauce: a shell in the image root as the module left it; exiting it releases "
                  "everything and fails the build")
        run_in_image(root, None, banner=banner, prompt=PROMPT.format(what=f"{names} failed"))
        raise
