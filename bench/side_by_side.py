"""Benchmark: hotsauce beside diskimage-builder, every figure of the performance table from one run.

The reference image is what diskimage-builder's `debian-minimal vm devuser -p curl` makes: Debian
bookworm with a kernel, a sudo user `alice`, `curl`. Run as root, with nothing else running:

    .venv/bin/python bench/side_by_side.py [--keep DIR] [--no-dib] [--tasks 40]

In one run, each from an empty cache of its own, it builds with hotsauce through its command line,
as a user would:
- the whole disk (GRUB, BIOS and UEFI), a zlib-compressed qcow2 as diskimage-builder writes it:
  cold, warm, and with the last module changed;
- the EC2-style set (the default layout, an uncompressed qcow2): cold, warm, last module changed;
then runs diskimage-builder's anchor script (../shared/anchors/dib/build.sh, or --dib-script) cold
and warm, times trivial Ansible tasks through hotsauce's connection against the built base and
through ansible-core's own local connection on the host (a fresh Python per task, no image, no
sandbox: bench/ansible_floor.py), and prints one table: times, ratios against diskimage-builder
and the targets, image sizes, and the largest resident set of any process of a build. Ratios
are only comparable within one run: the machine's load moves both tools.

hotsauce is measured as installed (scripts/install-deps.sh, or pip): with its bytecode compiled,
which the benchmark does first for the checkout it runs, as diskimage-builder's pip install does
for diskimage-builder.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

# Run as a script, this folder is on the path: the reference project and the trivial role are theirs.
from ansible_floor import local_costs
from reference_build import write_project
from sandbox_task_cost import role_of

import hotsauce as measured_package
from hotsauce.host.mounts import mount_points_below
from hotsauce.modules import ansible_run
from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.resolve import ResolvedModule

LAYOUTS = {
    "disk": ["--layout", "disk", "--qcow2-compression", "zlib"],
    "ec2": [],
}
RUNS = ("cold", "warm", "last module changed")
TARGETS = {"cold": 0.30, "warm": 0.03, "last module changed": 0.04}
TASK_TARGET, FIXED_TARGET, RSS_TARGET_MB = 0.10, 1.5, 400
ANCHOR = Path("shared") / "anchors" / "dib" / "build.sh"
MIB = 1 << 20
Costs = tuple[float, float]  # seconds per trivial Ansible task, fixed seconds per run


@dataclass
class Build:
    seconds: float
    image_bytes: int
    peak_rss_kib: int  # the largest resident set of any one process of the build
    stages: dict[str, float] = field(default_factory=dict)


def hotsauce_build(project: Path, cache: Path, output: Path, layout_flags: list[str]) -> Build:
    """One `hotsauce build` as a child process; its wait4 usage gives the peak memory of its tree."""
    argv = [sys.executable, "-m", "hotsauce", "build", "-s", "2G", "-o", str(output),
            "--cache-dir", str(cache), *layout_flags]
    started = time.monotonic()
    child = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output_text = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"hotsauce build failed:\n{output_text[-2000:]}")
    manifest = json.loads((output / "manifest.json").read_text())
    return Build(round(seconds, 1), (output / manifest["root"]).stat().st_size, usage.ru_maxrss,
                 stages_from(output_text))


def stages_from(summary: str) -> dict[str, float]:
    """The per-stage seconds hotsauce prints after a build ("    base    41.2s")."""
    stages: dict[str, float] = {}
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].endswith("s"):
            try:
                stages[parts[0]] = float(parts[1][:-1])
            except ValueError:
                continue
    return stages


def hotsauce_series(folder: Path, layout: str) -> dict[str, Build]:
    project, cache = folder / "project", folder / "cache"
    write_project(project, "first")
    flags = LAYOUTS[layout]
    builds = {"cold": hotsauce_build(project, cache, folder / "cold", flags),
              "warm": hotsauce_build(project, cache, folder / "warm", flags)}
    write_project(project, "changed")
    builds["last module changed"] = hotsauce_build(project, cache, folder / "changed", flags)
    return builds


def dib_build(script: Path, work: Path, label: str, warm: bool) -> Build:
    env = {**os.environ, "WARM": "1" if warm else "0"}
    started = time.monotonic()
    done = subprocess.run(["bash", str(script), str(work), label], env=env, capture_output=True, text=True,
                          check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"diskimage-builder failed: {done.stdout[-500:]}{done.stderr[-500:]}")
    image = work / "out" / f"deb-{label}.qcow2"
    return Build(round(seconds, 1), image.stat().st_size if image.exists() else 0, 0)


def default_dib_script() -> Path:
    """The anchor script in a `shared` folder beside the checkout (or beside a folder holding it)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / ANCHOR).is_file():
            return parent / ANCHOR
    return Path(__file__).resolve().parents[2] / ANCHOR


# --- Ansible: per-task and fixed cost through hotsauce's connection ----------------------------


def ansible_costs(base_archive: Path, work: Path, tasks: int, payload_memo: Path, rounds: int = 3) -> Costs:
    """Seconds per trivial task, and the fixed seconds of one run, each the best of `rounds`; with
    the payload memo of a cache that has built the reference image, as a build with it runs."""
    root = work / "root"
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", root, "--zstd", "-xf", base_archive], check=True)
    many, one = role_of(tasks, work / "many"), role_of(1, work / "one")
    per_task, fixed = float("inf"), float("inf")
    try:
        with build_chroot(root):
            def seconds_of(module: ResolvedModule) -> float:
                started = time.monotonic()
                ansible_run.run_ansible_modules(root, [module], {}, roles_path=[], collections_path=[],
                                                log_dir=work / "logs", emit=lambda event: None,
                                                payload_memo=payload_memo)
                return time.monotonic() - started
            for _ in range(rounds):
                with_many, with_one = seconds_of(many), seconds_of(one)
                # N tasks less one task: the run's own start-up cancels out.
                this_per_task = (with_many - with_one) / (tasks - 1)
                per_task = min(per_task, this_per_task)
                fixed = min(fixed, with_one - this_per_task)
    finally:
        remove(root)
    return per_task, fixed


def base_archive_in(cache: Path) -> Path:
    found = sorted((cache / "bases").glob("*.tar.zst"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"no base archive in {cache / 'bases'}")
    return found[-1]


def remove(folder: Path) -> None:
    # Never across a mount: a diskimage-builder run that failed may leave its chroot's binds behind.
    if left := mount_points_below(folder):
        print(f"left in place: {left[0]} is still mounted", file=sys.stderr)
        return
    subprocess.run(["rm", "-rf", "--one-file-system", folder], check=True)


# --- the table -----------------------------------------------------------------------------------


def table(hotsauce: dict[str, dict[str, Build]], dib: dict[str, Build],
          ansible: Costs | None, floor: Costs | None = None) -> list[str]:
    lines = ["| measure | hotsauce, whole disk (zlib) | hotsauce, EC2-style set | diskimage-builder "
             "| whole disk / dib | EC2 set / dib | target |", "|---|---:|---:|---:|---:|---:|---:|"]
    for run in RUNS:
        disk, ec2 = hotsauce.get("disk", {}).get(run), hotsauce.get("ec2", {}).get(run)
        theirs = dib.get("cold" if run == "cold" else "warm")
        cells = [seconds_cell(disk), seconds_cell(ec2), seconds_cell(theirs),
                 ratio_cell(disk, theirs), ratio_cell(ec2, theirs)]
        lines.append(f"| {run} | " + " | ".join(cells) + f" | at most {TARGETS[run]:.2f} |")
    disk_cold, dib_cold = hotsauce.get("disk", {}).get("cold"), dib.get("cold")
    ec2_series = hotsauce.get("ec2", {})
    lines.append(f"| qcow2, cold | {size_cell(disk_cold)} | {size_cell(ec2_series.get('cold'))} | "
                 f"{size_cell(dib_cold)} | {size_ratio(disk_cold, dib_cold)} | | whole disk at most dib's |")
    lines.append(f"| qcow2, warm | {size_cell(hotsauce.get('disk', {}).get('warm'))} | "
                 f"{size_cell(ec2_series.get('warm'))} | {size_cell(dib.get('warm'))} | | | "
                 "uncompressed cold at most warm |")
    peak = max((b.peak_rss_kib for series in hotsauce.values() for b in series.values()), default=0)
    lines.append(f"| peak resident memory (largest process) | {peak / 1024:.0f} MB | | | | | "
                 f"at most {RSS_TARGET_MB} MB |")
    if ansible:
        per_task, fixed = ansible
        lines.append(f"| trivial Ansible task | {per_task:.3f} s | | | | | at most {TASK_TARGET} s |")
        lines.append(f"| fixed cost of an Ansible run | {fixed:.2f} s | | | | | at most {FIXED_TARGET} s |")
    if floor:
        per_task, fixed = floor
        lines.append(f"| the same with ansible-core's local connection on the host (no image, no sandbox) "
                     f"| {per_task:.3f} s per task, {fixed:.2f} s per run | | | | | "
                     "a fresh Python per task |")
    return lines


def seconds_cell(build: Build | None) -> str:
    return f"{build.seconds:.1f} s" if build else "-"


def ratio_cell(ours: Build | None, theirs: Build | None) -> str:
    return f"{ours.seconds / theirs.seconds:.3f}" if ours and theirs and theirs.seconds else "-"


def size_cell(build: Build | None) -> str:
    return f"{build.image_bytes / MIB:.0f} MiB" if build and build.image_bytes else "-"


def size_ratio(ours: Build | None, theirs: Build | None) -> str:
    return f"{ours.image_bytes / theirs.image_bytes:.2f}" if ours and theirs and theirs.image_bytes else "-"


def attempt(name: str, step: Callable[[], object]) -> object | None:
    """Run one part; a failed part is reported and the others' figures are still printed."""
    print(f"-- {name}", file=sys.stderr, flush=True)
    try:
        return step()
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return None


def run_all(scratch: Path, args: argparse.Namespace) -> tuple[dict[str, dict[str, Build]], dict[str, Build],
                                                              Costs | None, Costs | None]:
    hotsauce: dict[str, dict[str, Build]] = {}
    for layout in LAYOUTS:
        series = attempt(f"hotsauce {layout}", partial(hotsauce_series, scratch / layout, layout))
        if isinstance(series, dict):
            hotsauce[layout] = series
    cache = scratch / "ec2" / "cache"
    costs = attempt("ansible", lambda: ansible_costs(base_archive_in(cache), scratch / "ansible", args.tasks,
                                                     payload_memo=cache / "ansible" / "payload-memo"))
    floor = attempt("ansible floor", lambda: local_costs(args.tasks))
    dib: dict[str, Build] = {}
    if not args.no_dib:
        script = args.dib_script or default_dib_script()
        for run in ("cold", "warm"):
            build = attempt(f"dib {run}", partial(dib_build, script, scratch / "dib", run, run == "warm"))
            if isinstance(build, Build):
                dib[run] = build
    return (hotsauce, dib, costs if isinstance(costs, tuple) else None,
            floor if isinstance(floor, tuple) else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the caches and outputs in this folder")
    parser.add_argument("--no-dib", action="store_true", help="hotsauce only (no ratios)")
    parser.add_argument("--dib-script", type=Path, default=None,
                        help=f"diskimage-builder's anchor script (default: the nearest {ANCHOR})")
    parser.add_argument("--tasks", type=int, default=40, help="trivial tasks in the Ansible measure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark builds real images", file=sys.stderr)
        return 2
    compileall.compile_dir(Path(measured_package.__file__).parent, quiet=1)
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="hotsauce-side-by-side-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        hotsauce, dib, ansible, floor = run_all(scratch, args)
    finally:
        if args.keep is None:
            remove(scratch)
    print("\n".join(table(hotsauce, dib, ansible, floor)))
    stages = {f"{layout} {run}": build.stages for layout, series in hotsauce.items() for run, build in series.items()}
    print(json.dumps({"stages": stages}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
