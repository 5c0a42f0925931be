"""Benchmark: ansible-core's own cost per trivial task and per run, with its `local` connection.

The same trivial tasks (`command: /bin/true`) that bench/side_by_side.py runs through hotsauce's
sandboxed connection, run here by plain `ansible-playbook -c local` against this host, with the
host's /usr/bin/python3 and no facts: no image, no sandbox, no ansible-runner. What it costs is
ansible-core's controller and a fresh module Python per task, what a connection that starts a
Python for every module cannot go below (hotsauce's warm Python forks one instead). Run alone,
as any user:

    .venv/bin/python bench/ansible_floor.py [--tasks 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def playbook(tasks: int, folder: Path) -> Path:
    lines = ["- hosts: localhost", "  gather_facts: false", "  tasks:"]
    for number in range(tasks):
        lines += [f"    - name: trivial {number}", "      ansible.builtin.command: /bin/true",
                  "      changed_when: false"]
    path = folder / f"tasks-{tasks}.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def seconds_of(book: Path, env: dict[str, str]) -> float:
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    started = time.monotonic()
    subprocess.run([str(ansible_playbook), "-c", "local", "-i", "localhost,", "-e",
                    "ansible_python_interpreter=/usr/bin/python3", str(book)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def local_costs(tasks: int = 40, rounds: int = 3) -> tuple[float, float]:
    """Seconds per trivial task and fixed seconds per run, each the best of `rounds`."""
    with tempfile.TemporaryDirectory(prefix="hotsauce-ansible-floor-") as scratch:
        folder = Path(scratch)
        # No ansible.cfg of the host's or the user's applies, as in a hotsauce run.
        (folder / "ansible.cfg").write_text("")
        env = {**os.environ, "ANSIBLE_CONFIG": str(folder / "ansible.cfg"),
               "ANSIBLE_LOCAL_TEMP": str(folder / "tmp"), "ANSIBLE_HOME": str(folder / "home")}
        many, one = playbook(tasks, folder), playbook(1, folder)
        per_task, fixed = float("inf"), float("inf")
        for _ in range(rounds):
            with_many, with_one = seconds_of(many, env), seconds_of(one, env)
            this_per_task = (with_many - with_one) / (tasks - 1)
            per_task = min(per_task, this_per_task)
            fixed = min(fixed, with_one - this_per_task)
    return per_task, fixed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    per_task, fixed = local_costs(args.tasks, args.rounds)
    print(f"ansible-core, local connection on the host: {per_task:.2f} s per trivial task, "
          f"{fixed:.2f} s fixed per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
