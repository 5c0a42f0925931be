"""The README's shared-role workflow, step by step: a role in its own git repository, pinned by tag in
requirements.yml, its version in the build's manifest, and an upgrade that re-runs only the modules
from that role on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.images import mounted_root_image, run_hotsauce

pytestmark = pytest.mark.integration

ROLE_TASKS = """\
---
- name: The image greets in this role's version
  ansible.builtin.copy:
    content: "{greeting}\\n"
    dest: /etc/greeting
    owner: root
    group: root
    mode: "0644"
"""
ROLE_META = """\
---
galaxy_info:
  author: you
  description: Leave a greeting in the image.
  license: MIT
  min_ansible_version: "2.16"
dependencies: []
"""


def git(repository: Path, *arguments: str) -> None:
    subprocess.run(["git", "-C", str(repository), "-c", "user.name=you", "-c", "user.email=you@example.org",
                    *arguments], check=True, capture_output=True)


def release_role(repository: Path, tag: str) -> None:
    """Step 1 (and 4): the role in its own repository, a release tagged."""
    (repository / "tasks").mkdir(parents=True, exist_ok=True)
    (repository / "meta").mkdir(exist_ok=True)
    (repository / "tasks/main.yml").write_text(ROLE_TASKS.format(greeting=f"hello from greeter {tag}"))
    (repository / "meta/main.yml").write_text(ROLE_META)
    if not (repository / ".git").is_dir():
        git(repository, "init", "-q")
    git(repository, "add", "-A")
    git(repository, "commit", "-q", "-m", f"greeter {tag}")
    git(repository, "tag", tag)


def pin(project: Path, repository: Path, tag: str) -> None:
    """Step 2 and 3: requirements.yml names the role by git URL and pins its version."""
    (project / "requirements.yml").write_text(
        f"roles:\n  - name: greeter\n    src: git+file://{repository}\n    version: {tag}\n"
    )


def build(project: Path, output: str, cache: Path) -> tuple[str, dict[str, dict[str, object]]]:
    result = run_hotsauce("build", "-s", "2G", "-o", output, "--cache-dir", cache, cwd=project, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    manifest = json.loads((project / output / "manifest.json").read_text())
    return result.stderr, {str(m["name"]): m for m in manifest["modules"]}


def test_a_pinned_git_role_shows_its_version_and_its_upgrade_reruns_only_the_modules_from_it_on(
        debian_rootfs_tarball: Path, tmp_path: Path) -> None:
    repository, project, cache = tmp_path / "greeter", tmp_path / "project", tmp_path / "cache"
    project.mkdir()
    release_role(repository, "v1.0")
    pin(project, repository, "v1.0")
    (project / "build.yaml").write_text(
        f"download:\n  from: {debian_rootfs_tarball}\nkernel: false\nadd_users: [alice]\n"
        "modules: [hotsauce.image.add_user, build_info, greeter]\n"
    )

    log, modules = build(project, "one", cache)
    assert "module runs not in the cache" in log
    assert modules["greeter"]["version"] == "v1.0"
    assert list(modules) == ["hotsauce.image.add_user", "build_info", "greeter"]

    log, modules = build(project, "two", cache)
    assert "the set of an identical build served from the cache" in log, "the pinned role changed between builds"
    assert modules["greeter"]["version"] == "v1.0"

    release_role(repository, "v1.1")
    pin(project, repository, "v1.1")
    log, modules = build(project, "three", cache)
    assert "module runs 1-2 of 3 served from the cache" in log, "modules before the upgraded role ran again"
    assert modules["greeter"]["version"] == "v1.1"
    with mounted_root_image(project / "three" / "root.qcow2", tmp_path) as root:
        assert (root / "etc/greeting").read_text() == "hello from greeter v1.1\n"
        assert "alice:" in (root / "etc/passwd").read_text()
