"""Which build goes to which builder next, and what became of each.

Each usable builder gets as many worker threads as its `hotsauce_parallel_builds`;
a worker takes the next build it may run, runs fleet_build.yml for it on its
builder and records the outcome. The rules:

- a build that fails is tried once more, on another builder when one is left;
- a set that arrives but does not verify is built again (up to REBUILDS times);
- a builder that cannot be reached is lost: its workers stop, and the build they
  held goes back to the queue, marked re-routed, without counting as a failure.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hotsauce.fleet.arrival import set_problem, set_size
from hotsauce.fleet.plan import BuilderSpec, BuildSpec
from hotsauce.fleet.playbook_run import Ending, PlaybookResult

ATTEMPTS = 2  # a failed build is retried once
REBUILDS = 2  # a set that fails verification is built again, this many times at most
INCOMING = ".fleet-incoming"  # under OUTDIR: sets on their way in, not yet verified


class Status(Enum):
    PENDING = "pending"
    RUNNING = "running"
    BUILT = "built"
    SKIPPED = "skipped"  # already in OUTDIR and verified
    FAILED = "failed"


@dataclass
class BuildRecord:
    spec: BuildSpec
    status: Status = Status.PENDING
    builder: str = ""
    failed_on: list[str] = field(default_factory=list)
    lost_on: list[str] = field(default_factory=list)
    rebuilds: int = 0
    attempts: int = 0
    seconds: float = 0.0
    size: int = 0
    reason: str = ""
    log: Path | None = None

    @property
    def rerouted(self) -> bool:
        return bool(self.lost_on)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.spec.name, "folder": str(self.spec.folder), "status": self.status.value,
                "builder": self.builder or None, "seconds": round(self.seconds, 1), "size": self.size,
                "attempts": self.attempts, "rerouted": self.rerouted, "lost_on": self.lost_on,
                "failed_on": self.failed_on, "rebuilds": self.rebuilds, "reason": self.reason or None,
                "log": str(self.log) if self.log else None}


@dataclass
class BuilderRecord:
    spec: BuilderSpec
    usable: bool = False
    reason: str = ""  # why it cannot build, or why it was lost
    lost: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"name": self.spec.name, "parallel_builds": self.spec.parallel, "usable": self.usable,
                "lost": self.lost, "reason": self.reason or None}


# Runs fleet_build.yml: (build, builder, where the set goes, where the log goes) -> result.
RunBuild = Callable[[BuildSpec, str, Path, Path], PlaybookResult]


class Fleet:
    def __init__(self, builds: list[BuildRecord], builders: list[BuilderRecord], outdir: Path,
                 run_build: RunBuild, say: Callable[[str], None]) -> None:
        self.builds = builds
        self.builders = builders
        self.outdir = outdir
        self.run_build = run_build
        self.say = say
        self.changed = threading.Condition()

    def run(self, cancelled: Callable[[], bool]) -> None:
        """Until every build is built or failed, or no builder is left. Returns when all workers have."""
        workers = [threading.Thread(target=self._work, args=(builder, cancelled),
                                    name=f"fleet-{builder.spec.name}-{slot}", daemon=True)
                   for builder in self.builders if builder.usable for slot in range(builder.spec.parallel)]
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():  # a join with a timeout, so Ctrl-C reaches the main thread
                worker.join(0.2)
        for record in self.builds:
            if record.status is Status.PENDING:
                record.status = Status.FAILED
                record.reason = record.reason or "no usable builder was left to build it"

    def _work(self, builder: BuilderRecord, cancelled: Callable[[], bool]) -> None:
        while True:
            with self.changed:
                record = self._next_for(builder, cancelled)
                if record is None:
                    self.changed.notify_all()
                    return
                record.status, record.builder = Status.RUNNING, builder.spec.name
                record.attempts += 1
            self.say(f"{record.spec.name}: building on {builder.spec.name}")
            started = time.monotonic()
            outcome = self._attempt(record, builder.spec.name)
            with self.changed:
                record.seconds += time.monotonic() - started
                self._record(record, builder, outcome)
                self.changed.notify_all()

    def _next_for(self, builder: BuilderRecord, cancelled: Callable[[], bool]) -> BuildRecord | None:
        """The next build this builder may take; waits while others run and may give it one."""
        while not builder.lost and not cancelled():
            pending = [r for r in self.builds if r.status is Status.PENDING]
            if not pending and not any(r.status is Status.RUNNING for r in self.builds):
                return None
            for record in pending:
                if self._may_take(builder, record):
                    return record
            self.changed.wait(0.5)
        return None

    def _may_take(self, builder: BuilderRecord, record: BuildRecord) -> bool:
        """A build goes back to a builder it failed on only when no other builder is left for it."""
        name = builder.spec.name
        if name not in record.failed_on:
            return True
        others = [b for b in self.builders if b.usable and not b.lost and b.spec.name not in record.failed_on]
        return not others

    def _attempt(self, record: BuildRecord, builder: str) -> tuple[PlaybookResult, str | None]:
        """The build on the builder, the set fetched into INCOMING and verified there."""
        incoming = self.outdir / INCOMING / f"{record.spec.name}.{builder}"
        shutil.rmtree(incoming, ignore_errors=True)
        log = self.outdir / f"{record.spec.name}.log"
        result = self.run_build(record.spec, builder, incoming, log)
        for leftover in incoming.parent.glob(f"{incoming.name}.*"):  # the playbook's archives, when cut short
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        if log.exists():
            record.log = log
        problem = set_problem(incoming) if result.ending is Ending.DONE else None
        if result.ending is Ending.DONE and problem is None:
            final = self.outdir / record.spec.name
            shutil.rmtree(final, ignore_errors=True)
            incoming.rename(final)
        else:
            shutil.rmtree(incoming, ignore_errors=True)
        return result, problem

    def _record(self, record: BuildRecord, builder: BuilderRecord, outcome: tuple[PlaybookResult, str | None]) -> None:
        result, problem = outcome
        name = record.spec.name
        if result.ending is Ending.DONE and problem is None:
            record.status, record.reason = Status.BUILT, ""
            record.size = set_size(self.outdir / name)
            self.say(f"{name}: built on {builder.spec.name}, verified")
        elif result.ending is Ending.DONE:
            record.rebuilds += 1
            record.reason = f"failed verification on arrival: {problem}"
            record.status = Status.PENDING if record.rebuilds <= REBUILDS else Status.FAILED
            self.say(f"{name}: {record.reason}" + ("; building it again" if record.status is Status.PENDING else ""))
        elif result.ending is Ending.UNREACHABLE:
            builder.lost, builder.reason = True, f"lost during {name}: {result.message}"
            record.lost_on.append(builder.spec.name)
            record.attempts -= 1  # not the build's failure
            record.status = Status.PENDING
            self.say(f"{builder.spec.name}: unreachable ({result.message}); {name} goes to another builder")
        elif result.ending is Ending.CANCELLED:
            record.status, record.reason = Status.FAILED, "cancelled"
        else:
            record.failed_on.append(builder.spec.name)
            record.reason = f"failed on {builder.spec.name}: {result.message}"
            record.status = Status.PENDING if len(record.failed_on) < ATTEMPTS else Status.FAILED
            self.say(f"{name}: {record.reason}" + ("; retrying it" if record.status is Status.PENDING else ""))


def already_there(specs: Sequence[BuildSpec], outdir: Path) -> list[BuildRecord]:
    """A record per build; those whose set is in OUTDIR and verifies are skipped."""
    records = []
    for spec in specs:
        record = BuildRecord(spec)
        final = outdir / spec.name
        if final.exists() and set_problem(final) is None:
            record.status, record.size = Status.SKIPPED, set_size(final)
            record.reason = "already built and verified"
        records.append(record)
    return records
