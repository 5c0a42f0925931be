"""Consecutive Ansible modules (roles, playbooks) applied to the image in one ansible-runner call.

One generated playbook holds a play per module, in the order of `modules`:
a role is a play of its own whose play vars are the module's `vars`, a
playbook is imported with its `vars`. The build configuration reaches every
module as inventory variables: above role defaults, below play vars and
set_fact (extra-vars would beat a role's own set_fact).

Everything Ansible writes on the host lives in a temporary folder of the run
(its home, local temp, config); what it writes in the image lives under one
temporary folder of the image's /tmp, removed afterwards. ansible-runner's
own artifacts (job_events/, stdout, status, rc, command, fact_cache/) are the
run's log, kept in the build's log folder and pruned with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hotsauce.config import ModuleKind
from hotsauce.errors import ModuleFailed
from hotsauce.events import Emit, Event
from hotsauce.host import cancel, ledger
from hotsauce.modules.ansible_plugins import CALLBACK_PLUGINS, CONNECTION_PLUGINS, MODULES, PAYLOAD_MEMO_CALLBACK
from hotsauce.modules.chroot import checked_host_path
from hotsauce.modules.module_server import warm_python_in
from hotsauce.modules.resolve import ResolvedModule

IMAGE_HOST = "image"
# Ansible's temp files in the image: one folder, removed after the run (the
# connection plugin makes it TMPDIR too).
IMAGE_ANSIBLE_TMP = "/tmp/.hotsauce-ansible"
# hotsauce's setup (ansible_plugins/modules/setup.py, found first as ansible.legacy.setup): setup's
# facts with the image's service manager and names, in one module launch (a second facts module
# cost every run 0.4 s).
FACTS_MODULES = "ansible.legacy.setup"
STAGE = "ansible"
# Set true for every run: the built-in roles clean caches and first-boot state only in an image.
BUILDING_VARIABLE = "hotsauce_building"
MESSAGE_LIMIT = 400
# ansible-runner's folder of one run's events, one JSON file each: the run's full event log.
EVENTS_FOLDER = "job_events"


@dataclass(frozen=True)
class TaskFailure:
    """A failed task as ansible-runner's events describe it."""

    module: ResolvedModule | None
    task: str
    message: str
    role: str  # "" for a task of a playbook's own
    task_path: str  # FILE:LINE of the task, "" when ansible did not say


@dataclass
class RunWatch:
    """What the event stream told us: which module is running and what failed."""

    modules_by_play: dict[str, ResolvedModule]
    current: ResolvedModule | None = None
    failure: TaskFailure | None = None
    errors: list[str] = field(default_factory=list)


def run_ansible_modules(
    root: Path,
    modules: Sequence[ResolvedModule],
    cfg: Mapping[str, Any],
    *,
    roles_path: Sequence[Path],
    collections_path: Sequence[Path],
    log_dir: Path,
    emit: Emit,
    payload_memo: Path | None = None,
) -> None:
    """Run consecutive Ansible modules (ResolvedModule from hotsauce.modules.resolve, kind ROLE or
    PLAYBOOK) in ONE ansible-runner call: one generated playbook applying them in order
    against the chroot. Called with build_chroot(root) already active. Raises
    ModuleFailed(module.name, "task 'NAME' (role R, FILE:LINE): MESSAGE; events: LOG") on a
    failed task. Streams output to the terminal (as "output" events through emit) and keeps
    ansible-runner's artifacts in log_dir/ansible-NN-NAME/ (job_events/ and stdout among them).
    `payload_memo` is a folder where module payload builds keep what they learn between runs
    (hotsauce.modules.ansible_plugins.callback.hotsauce_payload_memo): the build's cache."""
    if not modules:
        return
    for module in modules:
        if not module.is_ansible:
            raise ValueError(f"{module.name} is not an Ansible module")
    root = root.absolute()
    log_dir.mkdir(parents=True, exist_ok=True)
    ident = run_ident(modules[0])
    markers = {play_marker(m): m for m in modules}
    watch = RunWatch(markers)
    artifacts = log_dir / ident
    with ledger.temporary_folder("hotsauce-ansible-") as private_dir, image_left_clean(root), warm_python_in(root):
        playbook = write_project(private_dir, root, modules, cfg)
        env = runner_environment(private_dir, roles_path, collections_path, payload_memo)
        try:
            status = run_runner(private_dir, artifacts, playbook, env, event_handler(watch, emit))
        finally:
            keep_artifacts(artifacts, env)
    if status != "successful":
        raise failure_of(watch, modules, status, artifacts / EVENTS_FOLDER)


def run_ident(first: ResolvedModule) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", first.name).strip("-") or "run"
    return f"ansible-{first.ref.index:02d}-{slug}"


def play_marker(module: ResolvedModule) -> str:
    """The name of the module's first play: the event stream says which module runs."""
    return f"hotsauce module {module.ref.index}: {module.ref.label}"


# --- the project: inventory and playbook ------------------------------------


def variables_of(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Every build.yaml key as a variable; the free-form `vars` mapping spread out."""
    variables = dict(cfg.get("vars") or {})
    variables.update({key: value for key, value in cfg.items() if key != "vars"})
    return variables


def inventory(root: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    image = {
        "ansible_connection": "hotsauce_chroot",
        "ansible_host": str(root),
        "ansible_python_interpreter": "auto_silent",
        "ansible_remote_tmp": IMAGE_ANSIBLE_TMP,
        "ansible_async_dir": f"{IMAGE_ANSIBLE_TMP}/async",
        "ansible_pipelining": True,
        # Parallel fact modules would run through async_wrapper: needless here.
        "ansible_facts_parallel": False,
    }
    return {"all": {"vars": variables_of(cfg), "hosts": {IMAGE_HOST: image}}}


def role_reference(role: Path) -> str:
    """A role by path; a collection's role by its full name, so it keeps its collection."""
    parts = role.parts
    if "ansible_collections" in parts:
        at = len(parts) - 1 - parts[::-1].index("ansible_collections")
        if len(parts) == at + 5 and parts[at + 3] == "roles":
            return ".".join((parts[at + 1], parts[at + 2], parts[at + 4]))
    return str(role)


def plays_for(module: ResolvedModule, gather_facts: bool) -> list[dict[str, Any]]:
    play: dict[str, Any] = {
        "name": play_marker(module),
        "hosts": IMAGE_HOST,
        "gather_facts": gather_facts,
    }
    variables = dict(module.ref.vars)
    if module.kind is ModuleKind.ROLE:
        return [play | {"vars": variables, "roles": [{"role": role_reference(module.path)}]}]
    if module.kind is ModuleKind.PLAYBOOK:
        imported: dict[str, Any] = {"import_playbook": str(module.path)}
        if variables:
            imported["vars"] = variables
        return [play | {"tasks": []}, imported]
    raise ValueError(f"{module.name} is not an Ansible module")


def generated_playbook(modules: Sequence[ResolvedModule]) -> list[dict[str, Any]]:
    plays: list[dict[str, Any]] = []
    for position, module in enumerate(modules):
        # Facts are gathered once; later plays of the same run keep them.
        plays.extend(plays_for(module, gather_facts=position == 0))
    return plays


def write_project(
    private_dir: Path, root: Path, modules: Sequence[ResolvedModule], cfg: Mapping[str, Any]
) -> Path:
    project = private_dir / "project"
    project.mkdir()
    playbook = project / "hotsauce.yml"
    playbook.write_text(yaml.safe_dump(generated_playbook(modules), sort_keys=False))
    (private_dir / "inventory").mkdir()
    hosts = private_dir / "inventory" / "hosts.yml"
    hosts.write_text(yaml.safe_dump(inventory(root, cfg), sort_keys=False))
    return playbook


def runner_environment(
    private_dir: Path, roles_path: Sequence[Path], collections_path: Sequence[Path],
    payload_memo: Path | None = None,
) -> dict[str, str]:
    home = private_dir / "home"
    local_tmp = private_dir / "local-tmp"
    empty_collections = private_dir / "collections"
    for folder in (home, local_tmp, empty_collections):
        folder.mkdir()
    config = private_dir / "ansible.cfg"
    config.write_text("# hotsauce: no host ansible.cfg applies to an image build\n")
    memo = {} if payload_memo is None else {"ANSIBLE_CALLBACKS_ENABLED": PAYLOAD_MEMO_CALLBACK,
                                            "HOTSAUCE_PAYLOAD_MEMO": str(payload_memo)}
    return {
        **memo,
        "PATH": path_with_ansible(),
        "HOME": str(home),
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(home / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(local_tmp),
        "ANSIBLE_REMOTE_TEMP": IMAGE_ANSIBLE_TMP,
        "ANSIBLE_CONNECTION_PLUGINS": str(CONNECTION_PLUGINS),
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_PLUGINS),
        "ANSIBLE_LIBRARY": str(MODULES),
        "ANSIBLE_FACTS_MODULES": FACTS_MODULES,
        "ANSIBLE_ROLES_PATH": os.pathsep.join(str(p) for p in roles_path),
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
            [*(str(p) for p in collections_path), str(empty_collections)]
        ),
        "ANSIBLE_PIPELINING": "true",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "true",
    }


def path_with_ansible() -> str:
    """PATH with this Python's bin folder first: ansible-runner finds ansible-playbook, and we
    find ansible-galaxy, through PATH, and the virtualenv hotsauce runs from may not be activated."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"


# --- running -----------------------------------------------------------------


@contextmanager
def image_left_clean(root: Path) -> Iterator[None]:
    """Nothing of Ansible's stays in the image: its temp folder, and /root/.ansible
    when the image had none before."""
    image_tmp = checked_host_path(root, IMAGE_ANSIBLE_TMP.lstrip("/"))
    root_ansible = checked_host_path(root, "root/.ansible")
    had_root_ansible = root_ansible.exists() or root_ansible.is_symlink()
    shutil.rmtree(image_tmp, ignore_errors=True)
    # World-writable like /tmp: it is TMPDIR for everything modules run.
    image_tmp.mkdir(mode=0o700)
    image_tmp.chmod(0o1777)
    try:
        yield
    finally:
        shutil.rmtree(image_tmp, ignore_errors=True)
        if not had_root_ansible and root_ansible.is_dir() and not root_ansible.is_symlink():
            shutil.rmtree(root_ansible, ignore_errors=True)


def keep_artifacts(artifacts: Path, env: Mapping[str, str]) -> None:
    """ansible-runner's artifact folder of one run, made fit to stay in the build's log.

    Its `command` file records the whole environment of this process, which
    may hold the host's secrets (a cloud password, a token): only the
    variables hotsauce gave the run (`env`) stay in it. Folders end 0700 and
    files 0600, as the rest of the build's log.
    """
    command_file = artifacts / "command"
    try:
        command = json.loads(command_file.read_text())
    except (OSError, ValueError):
        command = None
    if isinstance(command, dict):
        command["env"] = {name: value for name, value in (command.get("env") or {}).items() if name in env}
        command_file.write_text(json.dumps(command))
    for folder, _dirs, files in os.walk(artifacts):
        os.chmod(folder, 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)


def run_runner(private_dir: Path, artifacts: Path, playbook: Path, env: Mapping[str, str], handler: Any) -> str:
    """ansible-runner in a thread the build's thread waits on, so Ctrl-C and SIGTERM
    (raised in the main thread) and a cancel of the build cancel the run: runner
    kills ansible-playbook's process group, and build_chroot stops what its
    workers started in the image.

    The main thread waits on an Event with a timeout rather than Thread.join: on Python
    3.11 a join interrupted by a signal handler's exception marks the thread as stopped,
    and the next join would return while ansible-runner still runs.
    """
    from ansible_runner.interface import init_runner  # slow import: only when needed

    cancelled = threading.Event()
    finished = threading.Event()
    runner = init_runner(
        private_data_dir=str(private_dir),
        # Kept where the build keeps its log; the build's log folders are what is pruned.
        artifact_dir=str(artifacts.parent),
        ident=artifacts.name,
        playbook=playbook.name,
        inventory=str(private_dir / "inventory" / "hosts.yml"),
        envvars=dict(env),
        # Roles that act differently in an image being built than on a running host read this.
        extravars={BUILDING_VARIABLE: True},
        event_handler=handler,
        cancel_callback=cancelled.is_set,
        suppress_env_files=True,
        quiet=True,
    )

    def run() -> None:
        try:
            runner.run()
        finally:
            finished.set()

    threading.Thread(target=run, name="ansible-runner", daemon=True).start()
    try:
        # Event.wait returns as soon as the run ends (a sleep loop cost every run half a poll, 0.1 s,
        # on average); a signal's exception still interrupts it.
        while not finished.wait(cancel.POLL_SECONDS):
            cancel.check()  # a build cancelled from another thread (build(cancel=...))
    except BaseException:
        cancelled.set()
        while not finished.is_set():
            time.sleep(0.1)
        raise
    return str(runner.status)


def event_handler(watch: RunWatch, emit: Emit) -> Any:
    def handle(event: dict[str, Any]) -> bool:
        if stdout := event.get("stdout") or "":
            emit(Event("output", STAGE, stdout))
        observe(watch, event)
        return True  # ansible-runner keeps it in its artifacts (job_events/)

    return handle


def observe(watch: RunWatch, event: dict[str, Any]) -> None:
    kind = event.get("event")
    data = event.get("event_data") or {}
    if kind == "playbook_on_play_start":
        watch.current = watch.modules_by_play.get(data.get("play", ""), watch.current)
    elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
        watch.failure = TaskFailure(
            watch.current,
            str(data.get("task") or "").strip(),
            result_message(data.get("res") or {}),
            role_name(str(data.get("role") or "").strip()),
            str(data.get("task_path") or "").strip(),
        )
    elif kind in ("verbose", "error") and "ERROR!" in (event.get("stdout") or ""):
        watch.errors.append(one_line(event["stdout"]))


def result_message(result: Mapping[str, Any]) -> str:
    parts = [str(result.get("msg") or "").strip()]
    for key in ("stderr", "module_stderr"):
        text = str(result.get(key) or "").strip()
        if text:
            parts.append(text.splitlines()[-1])
    message = ": ".join(part for part in parts if part)
    return one_line(message) or "failed (no message)"


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 3] + "..."


def failure_of(watch: RunWatch, modules: Sequence[ResolvedModule], status: str, events: Path) -> ModuleFailed:
    """One line that says where to look: the module, the task, its role and FILE:LINE, the
    task's own message, and the run's full event log."""
    if watch.failure is not None:
        failed = watch.failure
        name = failed.module.name if failed.module else modules[0].name
        return ModuleFailed(name, f"task '{failed.task}'{task_location(failed)}: {failed.message}; events: {events}")
    name = watch.current.name if watch.current else ", ".join(m.name for m in modules)
    reason = watch.errors[-1] if watch.errors else f"ansible-playbook ended {status}"
    return ModuleFailed(name, f"{reason}; events: {events}")


def role_name(role: str) -> str:
    """A role as people name it: a role run by path (as hotsauce runs them) by its folder's name."""
    return role.rstrip("/").rsplit("/", 1)[-1] if "/" in role else role


def task_location(failed: TaskFailure) -> str:
    """" (role R, FILE:LINE)": where the failed task is written, as far as ansible said."""
    parts = [f"role {failed.role}"] if failed.role else []
    if failed.task_path:
        parts.append(failed.task_path)
    return f" ({', '.join(parts)})" if parts else ""
