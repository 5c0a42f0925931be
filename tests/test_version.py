"""`hotsauce --version` names hotsauce's version and the ansible-core it drives, with where each
runs from, as `ansible --version` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ansible
import ansible.release

import hotsauce

REPO = Path(__file__).resolve().parent.parent


def test_version_names_hotsauce_and_the_ansible_core_in_use_with_their_locations() -> None:
    shown = subprocess.run([sys.executable, "-m", "hotsauce", "--version"], cwd=REPO, capture_output=True,
                           text=True, check=False)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"hotsauce {hotsauce.__version__}"
    assert f"  hotsauce python module location = {Path(hotsauce.__file__).parent}" in lines
    assert f"  ansible-core = {ansible.release.__version__}" in lines
    assert f"  ansible python module location = {Path(ansible.__file__).parent}" in lines
    assert any(line.startswith("  python version = ") and sys.executable in line for line in lines)


def test_version_is_answered_before_any_command_runs() -> None:
    shown = subprocess.run([sys.executable, "-m", "hotsauce", "--version", "build"], cwd=REPO,
                           capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and shown.stderr == ""
