"""run_ansible_modules: one ansible-runner call applying roles and playbooks to a chroot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotsauce.config import ModuleKind, ModuleRef, load_config
from hotsauce.errors import ModuleFailed
from hotsauce.events import Event
from hotsauce.modules.ansible_plugins.connection.hotsauce_chroot import state_folder
from hotsauce.modules.ansible_run import (
    RunWatch,
    failure_of,
    generated_playbook,
    observe,
    play_marker,
    role_reference,
    run_ansible_modules,
    variables_of,
)
from hotsauce.modules.builtins import builtin_folder
from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.galaxy import install_requirements
from hotsauce.modules.resolve import ResolvedModule, module_search, resolve_all
from hotsauce.store.cache import Cache
from tests.image_root import extracted_root, mounts_under, processes_in

DATA = Path(__file__).parent / "data" / "ansible"


def role(
    name: str, path: Path, index: int = 0, variables: dict[str, object] | None = None
) -> ResolvedModule:
    return ResolvedModule(
        ModuleRef(ModuleKind.ROLE, name, variables or {}, index), ModuleKind.ROLE, path
    )


# --- the failure line (from ansible-runner's events, no chroot needed) ------


def test_a_failed_task_event_becomes_one_line_with_role_file_line_message_and_event_log(tmp_path: Path) -> None:
    broken = role("broken", Path("/src/roles/broken"), 1)
    watch = RunWatch({play_marker(broken): broken})
    observe(watch, {"event": "playbook_on_play_start", "event_data": {"play": play_marker(broken)}})
    observe(watch, {"event": "runner_on_failed", "event_data": {
        "task": "Install nginx", "role": "/src/roles/broken", "task_path": "/src/roles/broken/tasks/main.yml:12",
        "res": {"msg": "No package matching 'ngnix'"}}})
    failure = failure_of(watch, [broken], "failed", tmp_path / "ansible-01-broken" / "job_events")
    assert str(failure) == (
        "module 'broken' failed: task 'Install nginx' (role broken, /src/roles/broken/tasks/main.yml:12): "
        f"No package matching 'ngnix'; events: {tmp_path}/ansible-01-broken/job_events"
    )


# --- the generated playbook (no chroot needed) ------------------------------


def test_free_form_vars_and_top_level_keys_all_become_variables() -> None:
    variables = variables_of(
        {"vars": {"a": 1, "packages": ["x"]}, "packages": ["y"], "hostname": "h"}
    )
    assert variables == {"a": 1, "packages": ["y"], "hostname": "h"}


def test_each_module_gets_its_own_play_in_order_with_its_own_vars() -> None:
    greeter = role("greeter", Path("/r/greeter"), 0, {"per_module": 1})
    site = ResolvedModule(
        ModuleRef(ModuleKind.PLAYBOOK, "site.yml", {"x": 2}, 1),
        ModuleKind.PLAYBOOK,
        Path("/b/site.yml"),
    )
    plays = generated_playbook([greeter, site])
    assert [p.get("name") or p.get("import_playbook") for p in plays] == [
        play_marker(greeter),
        play_marker(site),
        "/b/site.yml",
    ]
    assert plays[0]["vars"] == {"per_module": 1} and plays[0]["roles"] == [{"role": "/r/greeter"}]
    assert plays[0]["gather_facts"] is True and plays[1]["gather_facts"] is False
    assert plays[2]["vars"] == {"x": 2}


def test_a_collection_role_is_named_by_its_full_name() -> None:
    path = Path("/cache/collections/ansible_collections/acme/web/roles/server")
    assert role_reference(path) == "acme.web.server"
    assert role_reference(Path("/cache/roles/acme.webserver")) == "/cache/roles/acme.webserver"


# --- real runs against a Debian root ----------------------------------------


@dataclass
class Run:
    root: Path
    log_dir: Path
    events: list[Event]
    home: Path


@pytest.fixture(scope="module")
def root(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with extracted_root(debian_rootfs_tarball, tmp_path_factory.mktemp("ansible-run")) as root:
        yield root


@pytest.fixture(scope="module")
def mixed_run(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """add_user, a user role, a role from requirements.yml and a playbook, in one run."""
    work = tmp_path_factory.mktemp("mixed")
    build = work / "build"
    shutil.copytree(DATA / "build", build)
    subprocess.run(
        ["tar", "-C", str(DATA / "galaxy"), "-czf", str(work / "acme_web.tar.gz"), "acme_web"],
        check=True,
    )
    (build / "requirements.yml").write_text("- src: ../acme_web.tar.gz\n  name: acme.webserver\n")
    config = load_config(build / "build.yaml")
    assert config.requirements is not None
    events: list[Event] = []
    roles, collections = install_requirements(
        config.requirements, Cache(work / "cache"), events.append
    )
    search = module_search(config, roles, collections)
    modules = resolve_all(config, search)
    (root / "srv/linked-target").mkdir()
    # Absolute: inside the image it means the image's /srv, never the host's.
    (root / "opt/linked").symlink_to("/srv/linked-target")
    home = work / "home"
    home.mkdir()
    log_dir = work / "logs"
    saved_home = os.environ["HOME"]
    os.environ["HOME"] = str(home)  # whatever the run writes into "the host's home" lands here
    try:
        with build_chroot(root):
            run_ansible_modules(
                root,
                modules,
                dict(config.data) | {"hotsauce_build_dir": str(build)},
                roles_path=search.roles_path,
                collections_path=search.collections_path,
                log_dir=log_dir,
                emit=events.append,
            )
    finally:
        os.environ["HOME"] = saved_home
    yield Run(root, log_dir, events, home)


@pytest.mark.integration
def test_each_module_of_a_mixed_list_takes_effect_in_order(mixed_run: Run) -> None:
    etc = mixed_run.root / "etc"
    assert (etc / "hotsauce-order").read_text().splitlines() == [
        "greeter",
        "galaxy-role",
        "playbook",
    ]
    assert "saw=greeter,galaxy-role\n" in (etc / "playbook-saw").read_text()
    assert "alice=alice\n" in (etc / "greeting").read_text()  # the role saw add_user's work
    assert (etc / "greeter-handler").read_text() == "handler ran\n"


@pytest.mark.integration
def test_files_copied_in_follow_the_image_symlinks_not_the_host(mixed_run: Run) -> None:
    assert (
        mixed_run.root / "srv/linked-target/through-symlink"
    ).read_text() == "inside the image\n"
    assert not Path("/srv/linked-target").exists()


@pytest.mark.integration
def test_configuration_beats_role_defaults_and_set_fact_beats_configuration(mixed_run: Run) -> None:
    greeting = (mixed_run.root / "etc/greeting").read_text()
    assert "greeting=from-build-yaml\n" in greeting
    assert "color=red\n" in greeting


@pytest.mark.integration
def test_per_module_vars_apply_to_that_module_alone(mixed_run: Run) -> None:
    assert "per_module=only-greeter\n" in (mixed_run.root / "etc/greeting").read_text()
    assert "per_module=unset\n" in (mixed_run.root / "etc/playbook-saw").read_text()


@pytest.mark.integration
def test_facts_describe_the_image_and_its_service_manager_at_boot(mixed_run: Run) -> None:
    greeting = (mixed_run.root / "etc/greeting").read_text()
    assert "facts=Debian apt systemd\n" in greeting
    # The image's name, no virtualization, and nothing of the build host's addresses or firmware.
    hostname = (mixed_run.root / "etc/hostname").read_text().strip().split(".")[0]
    assert f"names={hostname} none no-address NA\n" in greeting
    # Emptied in setup's own shapes: a role counting the addresses or defaulting one renders.
    assert "addresses=0 none\n" in greeting
    # The mount facts, whose polling hotsauce's facts module shortens: the root, with its size.
    assert "mounts=1\n" in greeting


@pytest.mark.integration
def test_nothing_of_ansible_is_left_in_the_image_or_the_home_of_the_build(mixed_run: Run) -> None:
    assert not (mixed_run.root / "root/.ansible").exists()
    assert not (mixed_run.root / "tmp/.hotsauce-ansible").exists()
    assert list(mixed_run.home.iterdir()) == []


@pytest.mark.integration
def test_output_streams_as_events_and_ansible_runners_own_artifacts_are_kept(mixed_run: Run) -> None:
    output = "\n".join(e.message for e in mixed_run.events if e.kind == "output")
    assert "PLAY RECAP" in output
    (artifacts,) = mixed_run.log_dir.glob("ansible-*")
    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    kinds = [e["event"] for e in sorted(events, key=lambda e: e["counter"])]
    assert kinds[0] == "playbook_on_start" and "playbook_on_stats" in kinds
    assert "PLAY RECAP" in (artifacts / "stdout").read_text()
    assert (artifacts / "status").read_text() == "successful"


@pytest.mark.integration
def test_a_failing_task_names_its_role_file_line_message_and_event_log_and_leaves_nothing_behind(
    root: Path, mixed_run: Run, tmp_path: Path
) -> None:
    modules = [role("marker", DATA / "roles/marker", 0), role("broken", DATA / "roles/broken", 1)]
    with pytest.raises(ModuleFailed) as failure, build_chroot(root):
        run_ansible_modules(
            root,
            modules,
            {},
            roles_path=[],
            collections_path=[],
            log_dir=tmp_path / "logs",
            emit=lambda _event: None,
        )
    assert failure.value.module == "broken"
    tasks = DATA / "roles/broken/tasks/main.yml"
    events = tmp_path / "logs" / "ansible-00-marker" / "job_events"
    assert failure.value.reason == (
        f"task 'This task fails on purpose' (role broken, {tasks}:2): broken on purpose; events: {events}"
    )
    assert any("broken on purpose" in p.read_text() for p in events.glob("*.json"))
    assert (root / "etc/hotsauce-marker").exists()  # the module before it ran
    assert mounts_under(root) == []
    assert not (root / "tmp/.hotsauce-ansible").exists()
    assert not (root / "usr/sbin/policy-rc.d").exists()


@pytest.mark.integration
def test_install_rpms_in_an_image_without_rpm_tooling_fails_clearly(
    root: Path, mixed_run: Run, tmp_path: Path
) -> None:
    (tmp_path / "x.rpm").write_bytes(b"not really an rpm")
    install_rpms = role("install_rpms", builtin_folder("roles") / "install_rpms")
    with (
        pytest.raises(ModuleFailed, match="the image has no rpm tooling") as failure,
        build_chroot(root),
    ):
        run_ansible_modules(
            root,
            [install_rpms],
            {"rpms": ["x.rpm"], "hotsauce_build_dir": str(tmp_path)},
            roles_path=[],
            collections_path=[],
            log_dir=tmp_path / "logs",
            emit=lambda _event: None,
        )
    assert failure.value.module == "install_rpms"


INTERRUPTED_BUILD = """
import sys
from pathlib import Path
from hotsauce.modules.ansible_run import run_ansible_modules
from hotsauce.modules.chroot import build_chroot
from hotsauce.config import ModuleKind, ModuleRef
from hotsauce.errors import Interrupted
from hotsauce.modules.resolve import ResolvedModule
from hotsauce.host.signals import interruptible

root, role, logs = (Path(arg) for arg in sys.argv[1:])
sleeper = ResolvedModule(ModuleRef(ModuleKind.ROLE, "sleeper", {}, 0), ModuleKind.ROLE, role)
try:
    with interruptible(), build_chroot(root):
        run_ansible_modules(root, [sleeper], {}, roles_path=[], collections_path=[],
                            log_dir=logs, emit=lambda _event: None)
except Interrupted:
    sys.exit(130)
"""


@pytest.mark.integration
def test_sigterm_during_a_run_stops_everything_it_started_in_the_image(
    root: Path, mixed_run: Run, tmp_path: Path
) -> None:
    script = tmp_path / "build.py"
    script.write_text(INTERRUPTED_BUILD)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent)}
    build = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(root),
            str(DATA / "roles/sleeper"),
            str(tmp_path / "logs"),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not any("sleep" in p for p in processes_in(root)) and time.monotonic() < deadline:
            assert build.poll() is None, "the build ended before its long task started"
            time.sleep(0.5)
        assert any("sleep" in p for p in processes_in(root))
        build.send_signal(signal.SIGTERM)
        assert build.wait(timeout=60) == 130
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert processes_in(root) == []
    assert mounts_under(root) == []
    assert not (root / "tmp/.hotsauce-ansible").exists()


@pytest.mark.integration
def test_modules_run_in_the_warm_python_until_the_sandbox_a_task_gets_changes(
    root: Path, mixed_run: Run, tmp_path: Path
) -> None:
    """The first module imports module_utils from the warm Python's first payload; once a task
    installs a program the sandbox covers with its stub, modules run in sandboxes of their own."""
    nft = root / "usr/sbin/nft"
    assert not nft.exists()
    try:
        with build_chroot(root):
            run_ansible_modules(root, [role("warm_probe", DATA / "roles/warm_probe")], {}, roles_path=[],
                                collections_path=[], log_dir=tmp_path / "logs", emit=lambda event: None)
        answers = json.loads((root / "root/warm-probe.json").read_text())
    finally:
        nft.unlink(missing_ok=True)
        (root / "root/warm-probe.json").unlink(missing_ok=True)
    assert answers["before"].startswith("/run/hotsauce/server/library.zip/ansible/"), answers
    assert "/run/hotsauce/server/" not in answers["after"], answers
    assert processes_in(root) == []
    assert not Path(state_folder(str(root))).exists()
