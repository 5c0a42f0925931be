"""Benchmark: what the sandbox costs per Ansible task, against a plain chroot, and what the
warm Python saves.

N trivial tasks (`command: /bin/true`) run through ansible-runner against an
image root, the way a build runs roles: through the connection plugin as it is
(every module in a fork of the run's warm Python, in the sandbox), through the
same plugin with `hotsauce_warm_python: false` (a fresh Python in a sandbox of
its own per module), and with the sandbox turned off (plain chroot, as before
the sandbox). Run as root, with a Debian root tarball (the test cache's base will do):

    .venv/bin/python bench/sandbox_task_cost.py ROOTFS.tar.zst [--tasks 40] [--rounds 3]

It prints seconds per task for each, the best of the rounds (the machine is
shared: the best round is the least disturbed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hotsauce.config import ModuleKind, ModuleRef
from hotsauce.modules import ansible_run
from hotsauce.modules.ansible_plugins import CONNECTION_PLUGINS
from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.resolve import ResolvedModule

PLUGIN = "hotsauce_chroot.py"
# The plugin with bwrap reported missing: its plain-chroot fallback is the chroot of before.
SANDBOX_CHECK = "def bwrap_available() -> bool:\n    return shutil.which(BWRAP) is not None\n"
NO_SANDBOX = "def bwrap_available() -> bool:\n    return False\n"


def role_of(tasks: int, folder: Path) -> ResolvedModule:
    (folder / "tasks").mkdir(parents=True)
    lines = [f"- name: trivial {n}\n  ansible.builtin.command: /bin/true\n  changed_when: false\n"
             for n in range(tasks)]
    (folder / "tasks" / "main.yml").write_text("".join(lines))
    return ResolvedModule(ModuleRef(ModuleKind.ROLE, "trivial", {}, 0), ModuleKind.ROLE, folder)


def plain_chroot_plugins(folder: Path) -> Path:
    source = (CONNECTION_PLUGINS / PLUGIN).read_text()
    if SANDBOX_CHECK not in source:
        sys.exit("the connection plugin's bwrap check changed: update this benchmark")
    folder.mkdir()
    (folder / PLUGIN).write_text(source.replace(SANDBOX_CHECK, NO_SANDBOX))
    return folder


def seconds_for(run: Callable[[], None]) -> float:
    start = time.monotonic()
    run()
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rootfs", type=Path, help="a root filesystem tarball (tar.zst)")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hotsauce-bench-") as scratch:
        work = Path(scratch)
        root = work / "root"
        root.mkdir()
        subprocess.run(["tar", "-C", root, "--zstd", "-xf", args.rootfs], check=True)
        many, one = role_of(args.tasks, work / "many"), role_of(1, work / "one")
        variants: dict[str, tuple[Path, dict[str, object]]] = {
            "plain chroot": (plain_chroot_plugins(work / "plain"), {}),
            "sandbox, a fresh Python per task": (CONNECTION_PLUGINS, {"hotsauce_warm_python": False}),
            "sandbox, the warm Python": (CONNECTION_PLUGINS, {}),
        }
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, (plugins, cfg) in variants.items():
                ansible_run.CONNECTION_PLUGINS = plugins  # type: ignore[attr-defined]
                with build_chroot(root):
                    def play(module: ResolvedModule, cfg: dict[str, object] = cfg) -> Callable[[], None]:
                        return lambda: ansible_run.run_ansible_modules(
                            root, [module], cfg, roles_path=[], collections_path=[],
                            log_dir=work / "logs", emit=lambda event: None)
                    # Per task: N tasks less one task, so the playbook's own start-up cancels out.
                    per_task = (seconds_for(play(many)) - seconds_for(play(one))) / (args.tasks - 1)
                best[name] = min(best.get(name, per_task), per_task)
        subprocess.run(["rm", "-rf", "--one-file-system", root], check=True)
    plain = best["plain chroot"]
    print(f"tasks per run: {args.tasks}, rounds: {args.rounds} (best round shown)")
    for name, seconds in best.items():
        print(f"{name + ':':34} {seconds:.3f} s per task ({(seconds / plain - 1) * 100:+.1f} % against a plain chroot)")


if __name__ == "__main__":
    main()
