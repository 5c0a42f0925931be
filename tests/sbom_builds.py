"""Two small builds that differ in one package and one role, for the SBOM and `hotsauce diff` tests.

Both are `download:` builds of the session's Debian root tarball without a kernel. Each holds a
role from a local tarball through requirements.yml (acme.pkgrole, at the version given) and the
Python module `stamp`; version 1.1.0 of the role also installs `tree` from the mirror.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.images import run_hotsauce

STAMP_MODULE = '''
from hotsauce.rootpath import inside


def modify(name, root, cfg):
    inside(root, "/etc/stamped").write_text("stamped\\n")
'''

ROLE_META = """\
galaxy_info:
  author: hotsauce tests
  description: a role whose later version installs a package
  license: MIT
  min_ansible_version: "2.14"
  platforms: []
dependencies: []
"""

ROLE_TASKS = """\
- name: The role leaves its mark
  ansible.builtin.copy:
    dest: /etc/pkgrole
    content: "{version}\\n"
"""

ROLE_INSTALLS = """\
- name: The role installs a package
  ansible.builtin.apt:
    name: [tree]
    install_recommends: false
"""

ADDED_PACKAGE = "tree"
ROLE_NAME = "acme.pkgrole"


def write_project(folder: Path, base_url: str, role_version: str) -> Path:
    """A project whose role is at `role_version`; 1.1.0 and later install ADDED_PACKAGE."""
    role = folder / "role-src" / "pkgrole"
    (role / "tasks").mkdir(parents=True, exist_ok=True)
    (role / "meta").mkdir(exist_ok=True)
    (role / "meta" / "main.yml").write_text(ROLE_META)
    tasks = ROLE_TASKS.format(version=role_version)
    if role_version != "1.0.0":
        tasks += ROLE_INSTALLS
    (role / "tasks" / "main.yml").write_text(tasks)
    subprocess.run(["tar", "-C", str(role.parent), "-czf", str(folder / "pkgrole.tar.gz"), "pkgrole"], check=True)
    (folder / "requirements.yml").write_text(
        f"roles:\n  - src: ./pkgrole.tar.gz\n    name: {ROLE_NAME}\n    version: {role_version}\n")
    (folder / "python_modules").mkdir(exist_ok=True)
    (folder / "python_modules" / "stamp.py").write_text(STAMP_MODULE)
    (folder / "build.yaml").write_text(
        f"download:\n  from: {base_url}\nhostname: sbom\nkernel: false\n"
        f"modules:\n  - role: {ROLE_NAME}\n  - stamp\n")
    return folder


def build_set(project: Path, output: str = "out", *extra: str) -> Path:
    """The project built into the folder set `output` beside it."""
    result = run_hotsauce("build", "-s", "2G", "-o", output, *extra, cwd=project)
    assert result.returncode == 0, result.stderr
    return project / output
