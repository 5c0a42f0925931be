"""`hotsauce plan`: a build's modules, variables, cache use and Galaxy installs, with nothing done."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hotsauce.build import variables_for
from hotsauce.config import load_config
from hotsauce.modules.ansible_run import variables_of
from hotsauce.modules.galaxy import install_requirements
from hotsauce.modules.plan import PLAN_FORMAT, make_build_plan
from hotsauce.store.cache import Cache
from tests.images import run_hotsauce

GALAXY = Path(__file__).parent / "data" / "ansible" / "galaxy"

LOCAL_ROLE_DEFAULTS = "---\ngreeting: role-default\ncolor: role-default\nshade: role-default\n"
LOCAL_ROLE_VARS = "---\nshade: role-vars\n"
LOCAL_ROLE_TASKS = """---
- name: The greeting is written
  ansible.builtin.copy:
    content: "{{ greeting }} {{ color }} {{ shade }}\\n"
    dest: /etc/greeting
    mode: "0644"
- name: The order is recorded
  ansible.builtin.lineinfile:
    path: /etc/hotsauce-order
    line: greeter
    create: true
    mode: "0644"
"""
PLAYBOOK = """---
- name: The user's playbook
  hosts: all
  gather_facts: false
  tasks:
    - name: The order is recorded
      ansible.builtin.lineinfile:
        path: /etc/hotsauce-order
        line: "playbook {{ per_play | default('unset') }}"
"""
PYTHON_MODULE = """
CONFIG_KEYS = {{"stamp_text": {{"type": "string", "default": "hello", "help": "what stamp writes"}}}}


def modify(name, root, cfg):
    with open(root + "/etc/stamp", "w") as stamp:
        stamp.write(cfg["stamp_text"] + " {mark}\\n")
"""
BUILD_YAML = """\
download:
  from: {base}
kernel: false
modules:
  - add_user                       # built into hotsauce
  - role: greeter                  # beside this file
    vars: {{color: module-vars}}
  - role: acme.webserver           # from requirements.yml (a local tarball)
  - playbook: playbooks/site.yml
    vars: {{per_play: from-module-vars}}
  - stamp                          # python_modules/stamp.py beside this file
add_users: [alice]
greeting: from-build-yaml
vars:
  color: from-build-yaml-vars
"""


def write_project(folder: Path, base: Path, mark: str = "v1") -> Path:
    """A build.yaml mixing a built-in role, a local role, a Galaxy role, a playbook and a Python module."""
    role = folder / "roles" / "greeter"
    for part, text in (("defaults", LOCAL_ROLE_DEFAULTS), ("vars", LOCAL_ROLE_VARS), ("tasks", LOCAL_ROLE_TASKS)):
        (role / part).mkdir(parents=True, exist_ok=True)
        (role / part / "main.yml").write_text(text)
    (folder / "playbooks").mkdir(exist_ok=True)
    (folder / "playbooks" / "site.yml").write_text(PLAYBOOK)
    (folder / "python_modules").mkdir(exist_ok=True)
    (folder / "python_modules" / "stamp.py").write_text(PYTHON_MODULE.format(mark=mark))
    subprocess.run(["tar", "-C", GALAXY, "-czf", folder / "acme_web.tar.gz", "acme_web"], check=True)
    (folder / "requirements.yml").write_text("roles:\n  - src: ./acme_web.tar.gz\n    name: acme.webserver\n")
    (folder / "build.yaml").write_text(BUILD_YAML.format(base=base))
    return folder / "build.yaml"


def plan_json(build_yaml: Path, cache: Path, *flags: str) -> dict[str, Any]:
    result = run_hotsauce("plan", "-c", build_yaml, "--cache-dir", cache, "--json", *flags, cwd=build_yaml.parent)
    assert result.returncode == 0, result.stderr
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


def by_name(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {module["name"]: module for module in plan["modules"]}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    base = tmp_path / "root.tar.gz"
    base.write_bytes(b"a root tarball stands here: the plan only reads its digest")
    return write_project(tmp_path / "project", base)


def test_plan_names_each_modules_origin_and_kind_and_installs_nothing(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plan = plan_json(project, cache)

    assert plan["format"] == PLAN_FORMAT
    modules = by_name(plan)
    assert [(m["name"], m["kind"], m["origin"]) for m in plan["modules"]] == [
        ("add_user", "role", "built into hotsauce"),
        ("greeter", "role", "beside the build.yaml"),
        ("acme.webserver", "role", "requirements (not installed yet)"),
        ("playbooks/site.yml", "playbook", "beside the build.yaml"),
        ("stamp", "python", "beside the build.yaml"),
    ]
    assert [m["run"] for m in plan["modules"]] == [1, 1, 1, 1, 2]
    assert modules["stamp"]["path"] == str(project.parent / "python_modules" / "stamp.py")
    assert plan["galaxy"]["installed"] is False
    assert plan["galaxy"]["would_install"] == {"roles": ["acme.webserver"], "collections": []}
    assert not cache.exists(), "plan wrote into the cache"


def test_a_role_installed_from_requirements_by_an_earlier_build_resolves_from_there(
    project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    install_requirements(project.parent / "requirements.yml", Cache(cache), lambda _event: None)
    plan = plan_json(project, cache)
    galaxy_role = by_name(plan)["acme.webserver"]
    assert galaxy_role["origin"] == "installed from requirements"
    assert galaxy_role["path"].startswith(str(cache / "galaxy"))
    assert plan["galaxy"]["installed"] is True and plan["galaxy"]["would_install"]["roles"] == []


def test_each_variable_names_the_source_that_wins_and_what_it_overrides(project: Path, tmp_path: Path) -> None:
    variables = {name: module["variables"] for name, module in by_name(plan_json(project, tmp_path / "c")).items()}
    greeter = variables["greeter"]
    defaults = str(project.parent / "roles/greeter/defaults/main.yml")
    # A top-level build.yaml key beats the role default.
    assert greeter["greeting"]["value"] == "from-build-yaml"
    assert greeter["greeting"]["source"] == "build.yaml"
    assert greeter["greeting"]["overrides"] == [{"source": "role default", "where": defaults, "value": "role-default"}]
    # The module's vars beat the build.yaml's vars, which beat the role default.
    assert greeter["color"]["source"] == "module vars"
    assert [s["source"] for s in greeter["color"]["overrides"]] == ["role default", "build.yaml vars"]
    # The role's vars/main.yml beats everything hotsauce hands it.
    assert greeter["shade"]["source"] == "role vars"
    assert variables["add_user"]["add_users"]["source"] == "build.yaml"
    assert variables["playbooks/site.yml"]["per_play"]["source"] == "module vars"
    assert variables["stamp"]["stamp_text"] == {
        "value": "hello", "source": "CONFIG_KEYS default",
        "where": str(project.parent / "python_modules/stamp.py"), "overrides": []}


def test_the_variables_every_ansible_module_sees_are_those_ansible_run_hands_it(project: Path) -> None:
    config = load_config(project)
    plan = make_build_plan(config, Cache(project.parent / "no-cache", enabled=False))
    assert {name: v.value for name, v in plan.common_variables.items()} == variables_of(variables_for(config))


def test_the_text_plan_says_where_a_module_comes_from_and_which_source_wins(project: Path, tmp_path: Path) -> None:
    result = run_hotsauce("plan", "-c", project, "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("2. role:greeter (role) from beside the build.yaml") for line in lines)
    assert any(line.strip().startswith('greeting = "from-build-yaml"  <- build.yaml') and
               'over role default "role-default"' in line for line in lines), result.stdout
    assert any("would install roles acme.webserver" in line for line in lines)


def test_without_the_cache_the_plan_says_everything_runs(project: Path, tmp_path: Path) -> None:
    plan = plan_json(project, tmp_path / "cache", "--no-cache")
    assert [run["cache"]["hit"] for run in plan["runs"]] == [False, False]
    assert "work folder" in plan["galaxy"]["reason"]


def test_a_module_that_is_nowhere_is_refused_as_the_build_refuses_it(project: Path, tmp_path: Path) -> None:
    install_requirements(project.parent / "requirements.yml", Cache(tmp_path / "cache"), lambda _event: None)
    project.write_text(project.read_text().replace("  - stamp ", "  - no_such_module "))
    result = run_hotsauce("plan", "-c", project, "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode != 0
    assert "modules[4]: unknown module 'no_such_module'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_after_a_build_a_change_to_the_last_module_shows_a_cache_hit_for_the_others(
    debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    build_yaml = write_project(tmp_path / "project", debian_rootfs_tarball)
    cache = tmp_path / "cache"
    built = run_hotsauce("build", "-s", "2G", "-o", tmp_path / "out", "-c", build_yaml, "--cache-dir", cache,
                         cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]

    unchanged = plan_json(build_yaml, cache)
    assert [run["cache"]["hit"] for run in unchanged["runs"]] == [True, True]
    # The quick last run was not archived; the kept set of the identical build stands for it.
    assert "not archived" in unchanged["runs"][1]["cache"]["reason"]
    assert unchanged["galaxy"]["installed"] is True
    assert by_name(unchanged)["acme.webserver"]["origin"] == "installed from requirements"

    # The last module changes, nothing else (a new tarball of the Galaxy role would be a new requirements key).
    (build_yaml.parent / "python_modules" / "stamp.py").write_text(PYTHON_MODULE.format(mark="v2"))
    changed = plan_json(build_yaml, cache)
    first, last = changed["runs"]
    assert first["modules"] == ["add_user", "greeter", "acme.webserver", "playbooks/site.yml"]
    assert first["cache"]["hit"] is True and first["cache"]["reason"] == "restored from the cache"
    assert Path(first["cache"]["entry"]).is_file()
    assert last["modules"] == ["stamp"] and last["cache"]["hit"] is False
    assert "a module of run 2 changed" in last["cache"]["reason"]


@pytest.mark.integration
def test_after_a_build_of_one_quick_python_module_the_plan_says_it_runs_no_module(
    debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    """The one run is the last one, quick, and so not archived: the kept set of the build stands for it."""
    folder = tmp_path / "project"
    (folder / "python_modules").mkdir(parents=True)
    (folder / "python_modules" / "stamp.py").write_text(PYTHON_MODULE.format(mark="v1"))
    build_yaml = folder / "build.yaml"
    build_yaml.write_text(f"download:\n  from: {debian_rootfs_tarball}\nkernel: false\nmodules:\n  - stamp\n")
    cache = tmp_path / "cache"
    built = run_hotsauce("build", "-s", "2G", "-o", tmp_path / "out", "-c", build_yaml, "--cache-dir", cache,
                         cwd=folder)
    assert built.returncode == 0, built.stderr[-3000:]
    [run] = plan_json(build_yaml, cache)["runs"]
    assert run["cache"]["hit"] is True, run["cache"]
    assert "not archived" in run["cache"]["reason"]
