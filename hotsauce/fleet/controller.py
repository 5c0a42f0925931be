"""`hotsauce fleet` from start to end: check the input, prepare the builders, build, report."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotsauce.errors import ConfigError
from hotsauce.fleet.plan import BuilderSpec, BuildSpec, existing, read_builders, read_builds
from hotsauce.fleet.playbook_run import Ending, PlaybookResult, fleet_playbook, run_playbook
from hotsauce.fleet.schedule import INCOMING, BuilderRecord, BuildRecord, Fleet, Status, already_there
from hotsauce.fleet.wheel import controller_wheel, given_wheel
from hotsauce.host.sizes import human_size

PACKAGES_FILE = Path(__file__).with_name("debian-packages.txt")
REPORT_NAME = "fleet.json"
WHEEL_FOLDER = ".fleet-wheel"  # under OUTDIR


@dataclass(frozen=True)
class FleetRequest:
    builds: Sequence[Path]
    inventory: Path
    outdir: Path
    build_args: Sequence[str]
    wheel: Path | None = None


@dataclass(frozen=True)
class FleetPlan:
    builds: list[BuildSpec]
    builders: list[BuilderSpec]
    inventory: Path
    outdir: Path


def plan(request: FleetRequest) -> FleetPlan:
    """Everything checked on the controller, before any builder is touched."""
    if not request.builds:
        raise ConfigError("hotsauce fleet: name at least one build folder")
    builds = read_builds(request.builds)
    inventory = existing(request.inventory, "inventory")
    builders = read_builders(inventory)
    outdir = request.outdir.absolute()
    if outdir.exists() and not outdir.is_dir():
        raise ConfigError(f"-o {request.outdir}: exists and is not a folder")
    existing(outdir.parent, "the folder of -o")
    if request.wheel is not None:
        given_wheel(request.wheel)
    return FleetPlan(builds, builders, inventory, outdir)


def debian_packages() -> list[str]:
    """hotsauce/fleet/debian-packages.txt: names, with '#' comments; scripts/install-deps.sh reads it too."""
    names: list[str] = []
    for line in PACKAGES_FILE.read_text().splitlines():
        names += line.split("#", 1)[0].split()
    return names


def run_fleet(request: FleetRequest, say: Callable[[str], None], cancelled: threading.Event) -> list[BuildRecord]:
    fleet_plan = plan(request)
    outdir = fleet_plan.outdir
    outdir.mkdir(exist_ok=True)
    records = already_there(fleet_plan.builds, outdir)
    for record in records:
        if record.status is Status.SKIPPED:
            say(f"{record.spec.name}: already in {outdir / record.spec.name}, verified; skipped")
    builders = [BuilderRecord(spec) for spec in fleet_plan.builders]
    if any(record.status is Status.PENDING for record in records):
        wheel = given_wheel(request.wheel) if request.wheel else controller_wheel(outdir / WHEEL_FOLDER)
        set_up(builders, fleet_plan.inventory, wheel, say, cancelled)
        run_build = build_runner(fleet_plan.inventory, request.build_args, cancelled)
        Fleet(records, builders, outdir, run_build, say).run(cancelled.is_set)
        with contextlib.suppress(OSError):  # left when a fetch was cut short: kept for a look
            (outdir / INCOMING).rmdir()
    write_report(outdir / REPORT_NAME, records, builders)
    return records


def set_up(builders: list[BuilderRecord], inventory: Path, wheel: Path, say: Callable[[str], None],
           cancelled: threading.Event) -> None:
    """fleet_setup.yml on every builder at once; one that fails is left out, with its reason."""
    extravars = {"hotsauce_wheel": str(wheel), "hotsauce_packages": debian_packages()}

    def prepare(builder: BuilderRecord) -> None:
        result = run_playbook(fleet_playbook("fleet_setup.yml"), inventory, builder.spec.name, extravars,
                              cancelled.is_set)
        builder.usable = result.ending is Ending.DONE
        builder.reason = "" if builder.usable else f"{result.ending.value}: {result.message}"
        say(f"{builder.spec.name}: " + ("ready" if builder.usable else f"cannot build ({builder.reason})"))

    threads = [threading.Thread(target=prepare, args=(b,), name=f"setup-{b.spec.name}", daemon=True)
               for b in builders]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)


def build_runner(inventory: Path, build_args: Sequence[str], cancelled: threading.Event) -> Any:
    def run_build(spec: BuildSpec, builder: str, fetch_to: Path, log: Path) -> PlaybookResult:
        extravars = {"build_name": spec.name, "build_dir": str(spec.folder), "build_items": list(spec.items),
                     "build_args": list(build_args), "fetch_dir": str(fetch_to), "log_path": str(log)}
        return run_playbook(fleet_playbook("fleet_build.yml"), inventory, builder, extravars, cancelled.is_set)

    return run_build


def write_report(path: Path, records: list[BuildRecord], builders: list[BuilderRecord]) -> None:
    report = {"builds": [r.as_json() for r in records], "builders": [b.as_json() for b in builders]}
    path.write_text(json.dumps(report, indent=2) + "\n")


def report_table(records: list[BuildRecord]) -> str:
    rows = [("BUILD", "BUILDER", "STATUS", "TIME", "SIZE")]
    for r in records:
        status = r.status.value + (f" (re-routed from {', '.join(r.lost_on)})" if r.rerouted else "")
        if r.status is Status.FAILED and r.log:
            status += f", log {r.log}"
        rows.append((r.spec.name, r.builder or "-", status, f"{r.seconds:.0f}s" if r.seconds else "-",
                     human_size(r.size) if r.size else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
                     + "  " + row[4] for row in rows)
