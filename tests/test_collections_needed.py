"""Collections a role or playbook calls are known before the disk is allocated; requirements.yml
installs them from a tarball, a folder or a git repository, like roles."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hotsauce.config import load_config
from hotsauce.errors import ConfigError
from hotsauce.modules.ansible_run import path_with_ansible
from hotsauce.modules.galaxy import install_requirements
from hotsauce.modules.resolve import module_search, resolve_all
from hotsauce.store.cache import Cache

ROLE_TASKS = """\
- name: pick the tasks of this distribution
  ansible.builtin.include_tasks: "{{ ansible_distribution }}.yml"
- name: the common part
  ansible.builtin.import_tasks: common.yml
"""

COLLECTION_MODULE = '''\
#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={"text": {"type": "str", "required": True}})
    module.exit_json(changed=False, echoed=module.params["text"])


if __name__ == "__main__":
    main()
'''


def project(folder: Path, role_files: dict[str, str], modules: str = "  - tuned\n") -> Path:
    role = folder / "roles" / "tuned"
    for relative, text in role_files.items():
        (role / relative).parent.mkdir(parents=True, exist_ok=True)
        (role / relative).write_text(text)
    path = folder / "build.yaml"
    path.write_text(f"download: {{from: root.tar}}\nmodules:\n{modules}")
    return path


def resolve_build(path: Path, collections: list[Path] | None = None) -> None:
    config = load_config(path)
    resolve_all(config, module_search(config, (), collections or []))


def test_a_role_calling_a_missing_collection_in_an_included_file_names_role_module_and_entry(
    tmp_path: Path,
) -> None:
    path = project(tmp_path, {
        "tasks/main.yml": ROLE_TASKS,
        "tasks/common.yml": "- ansible.builtin.debug: {msg: hi}\n",
        "tasks/Debian.yml": "- block:\n    - community.general.ufw: {rule: allow, port: '22'}\n",
    })  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        resolve_build(path)
    message = str(raised.value)
    assert "\n" not in message
    assert "role 'tuned' calls community.general.ufw (tasks/Debian.yml)" in message
    assert "add to requirements.yml: collections: [{name: community.general}]" in message


def test_a_handler_calling_a_missing_collection_is_found_too(tmp_path: Path) -> None:
    path = project(tmp_path, {
        "tasks/main.yml": "- ansible.builtin.command: 'true'\n",
        "handlers/main.yml": "- name: reload sysctl\n  ansible.posix.sysctl: {name: vm.swappiness, value: '10'}\n",
    })  # fmt: skip
    with pytest.raises(ConfigError, match=r"calls ansible\.posix\.sysctl \(handlers/main\.yml\).*ansible\.posix"):
        resolve_build(path)


def test_a_playbook_calling_a_missing_collection_is_refused(tmp_path: Path) -> None:
    path = project(tmp_path, {"tasks/main.yml": "[]\n"}, "  - playbook: site.yml\n")
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks:\n    - import_tasks: more.yml\n")
    (tmp_path / "more.yml").write_text("- community.general.timezone: {name: UTC}\n")
    with pytest.raises(ConfigError, match=r"playbook 'site\.yml' calls community\.general\.timezone \(more\.yml\)"):
        resolve_build(path)


def test_builtin_modules_short_names_and_templated_includes_need_no_collection(tmp_path: Path) -> None:
    path = project(tmp_path, {
        "tasks/main.yml": ROLE_TASKS,
        "tasks/common.yml": "- copy: {content: x, dest: /tmp/x}\n- ansible.legacy.command: 'true'\n",
    })  # fmt: skip
    resolve_build(path)


def build_collection(folder: Path) -> Path:
    """hotsauce_test.tools: a collection of one module, built by ansible-galaxy into a tarball."""
    source = folder / "source" / "hotsauce_test" / "tools"
    (source / "plugins" / "modules").mkdir(parents=True)
    (source / "plugins" / "modules" / "echo.py").write_text(COLLECTION_MODULE)
    (source / "galaxy.yml").write_text(
        "namespace: hotsauce_test\nname: tools\nversion: 1.0.0\nreadme: README.md\nauthors: [hotsauce]\n"
    )
    (source / "README.md").write_text("a test collection\n")
    (source / "meta").mkdir()
    (source / "meta" / "runtime.yml").write_text("requires_ansible: '>=2.14'\n")
    built = subprocess.run(
        ["ansible-galaxy", "collection", "build", str(source), "--output-path", str(folder)],
        capture_output=True, text=True, check=False, env={"PATH": path_with_ansible(), "HOME": str(folder)},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return folder / "hotsauce_test-tools-1.0.0.tar.gz"


def git_repository_of(source: Path, folder: Path) -> Path:
    repository = folder / "tools.git"
    shutil.copytree(source, repository)
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tools"]):
        subprocess.run(["git", "-C", str(repository), *command], check=True)
    return repository


@pytest.mark.integration  # ansible-galaxy builds and installs: seconds each
@pytest.mark.parametrize("form", ["tarball", "folder", "git"])
def test_a_collection_built_here_installs_from_requirements_and_satisfies_the_role(
    form: str, tmp_path: Path
) -> None:
    tarball = build_collection(tmp_path)
    source = tmp_path / "source" / "hotsauce_test" / "tools"
    entry = {
        "tarball": f"  - name: {tarball}\n    type: file\n",
        "folder": f"  - name: {source}\n    type: dir\n",
        "git": f"  - name: git+file://{git_repository_of(source, tmp_path)}\n    type: git\n",
    }[form]
    (tmp_path / "requirements.yml").write_text(f"collections:\n{entry}")
    _roles, collections = install_requirements(tmp_path / "requirements.yml", Cache(tmp_path / "cache"),
                                               lambda _e: None)
    installed = collections[0] / "ansible_collections" / "hotsauce_test" / "tools"
    assert (installed / "plugins" / "modules" / "echo.py").is_file()
    path = project(tmp_path, {"tasks/main.yml": "- hotsauce_test.tools.echo: {text: hi}\n"})
    resolve_build(path, collections)
    (tmp_path / "roles" / "tuned" / "tasks" / "main.yml").write_text("- hotsauce_test.tools.nosuch: {}\n")
    with pytest.raises(ConfigError, match=re.escape("calls hotsauce_test.tools.nosuch (tasks/main.yml), which "
                                                    "the installed collection hotsauce_test.tools")):
        resolve_build(path, collections)
