"""What hotsauce may hold on the host: loop devices and mounts.

Other processes on a shared machine may attach and mount their own, so a
check compares before and after rather than expecting none.
"""

from __future__ import annotations

import json
import subprocess


def attached_loops() -> set[str]:
    result = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True,
                            check=False)
    if not result.stdout.strip():
        return set()
    devices = json.loads(result.stdout).get("loopdevices", [])
    return {f"loop {d['name']} -> {d.get('back-file')}" for d in devices}


def mounts() -> set[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return {f"mount {line.split()[4]}" for line in mountinfo}


def held_resources(under: str = "/") -> set[str]:
    """Loop devices backed by, and mounts at, paths below `under`."""
    return {item for item in attached_loops() | mounts() if f" {under}" in item or f"> {under}" in item}
