#!/usr/bin/python
"""The facts of an image root: setup's, with what names the build host replaced by the image's.

hotsauce runs it as `ansible.legacy.setup` (its library comes first in that search), so play
fact gathering passes it setup's options (gather_subset, gather_timeout, filter, fact_path) and it
collects with the same collectors, in one module launch. A task naming `ansible.builtin.setup`
still gets Ansible's own.

With /proc mounted in the chroot, setup reads the build host's PID 1 and
reports the host's service manager; this module reports the one the image's
own /sbin/init will start. Likewise the names (hostname, nodename, fqdn,
domain) are the image's own /etc/hostname, virtualization is none, and what
setup reads from the host's network, firmware and kernel that would name the
build host (its addresses, serial numbers, machine UUID) is emptied: nothing
of the build host may be templated into an image. Only facts that were
gathered are replaced, so a narrower gather_subset or a filter still holds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.facts import ansible_collector, default_collectors
from ansible.module_utils.facts.collector import CollectorNotFoundError, CycleFoundInFactDeps, UnresolvedFactDep
from ansible.module_utils.facts.hardware import linux as linux_hardware
from ansible.module_utils.facts.namespace import PrefixFactNamespace

DOCUMENTATION = """
module: setup
short_description: setup's facts of an image root, naming the image instead of the build host
description:
  - Collects facts as ansible.builtin.setup does, then gives the service manager, the names and
    the virtualization of the image, and empties the build host's addresses and serial numbers.
options:
  gather_subset: {type: list, elements: str, default: [all], description: as setup's}
  gather_timeout: {type: int, default: 10, description: as setup's}
  filter: {type: list, elements: str, default: [], description: as setup's}
  fact_path: {type: path, default: /etc/ansible/facts.d, description: as setup's}
author: hotsauce
"""

# setup's own: what `gather_subset: ["!all"]` still collects.
MINIMAL_SUBSET = frozenset(("apparmor", "caps", "cmdline", "date_time", "distribution", "dns", "env", "fips",
                            "local", "lsb", "pkg_mgr", "platform", "python", "selinux", "service_mgr",
                            "ssh_pub_keys", "user"))

SYSTEMD_BINARIES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")


def boot_service_manager() -> str:
    init = "/sbin/init"
    if os.path.lexists(init):
        name = os.path.basename(os.path.realpath(init))
        if name == "systemd":
            return "systemd"
        if name == "openrc-init" or os.path.exists("/sbin/openrc"):
            return "openrc"
        if name == "runit-init" or name == "runit":
            return "runit"
        return "sysvinit"
    if any(os.path.exists(path) for path in SYSTEMD_BINARIES):
        return "systemd"
    return "service"


def image_hostname() -> str:
    """The image's /etc/hostname (hotsauce writes it from build.yaml's hostname before modules run)."""
    try:
        with open("/etc/hostname") as hostname_file:
            return hostname_file.read().strip() or "localhost"
    except OSError:
        return "localhost"


def name_facts(fqdn: str) -> dict[str, object]:
    short, _, domain = fqdn.partition(".")
    return {"hostname": short, "nodename": fqdn, "fqdn": fqdn, "domain": domain}


# An image has no network yet, and is not the machine it is built on: facts setup
# gathers from the build host's interfaces and firmware are emptied, not guessed. Each
# keeps the shape setup gives it on a machine without them (a mapping, a list, "NA"), so
# a role that loops over the addresses or reads `.address | default(...)` runs as there.
NO_HOST_VALUES: dict[str, object] = {
    "default_ipv4": {},
    "default_ipv6": {},
    "all_ipv4_addresses": [],
    "all_ipv6_addresses": [],
    "product_uuid": "NA",
    "product_serial": "NA",
    "board_serial": "NA",
    "chassis_serial": "NA",
    "virtualization_type": "none",
    "virtualization_role": "none",
    "virtualization_tech_guest": [],
    "virtualization_tech_host": [],
}


def image_facts() -> dict[str, object]:
    facts: dict[str, object] = {"service_mgr": boot_service_manager()}
    facts.update(name_facts(image_hostname()))
    facts.update(NO_HOST_VALUES)
    return facts


def with_image_facts(collected: Mapping[str, object]) -> dict[str, object]:
    """`collected` (prefixed `ansible_`, as setup returns them) with the image's values in place of
    the build host's, for the facts that were gathered."""
    replaced = dict(collected)
    for name, value in image_facts().items():
        if f"ansible_{name}" in replaced:
            replaced[f"ansible_{name}"] = value
    return replaced


class TimeWithShortPauses:
    """The `time` Linux's hardware facts see. Their mount facts ask a pool of threads for each
    mount's size and poll the pool every 0.1 s until all have answered: in an image, where the
    threads need a few milliseconds, most of the 0.1 s was waiting. This polls every 5 ms."""

    POLL_SECONDS = 0.005

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.POLL_SECONDS))


def main() -> None:
    if getattr(linux_hardware, "time", None) is time:
        linux_hardware.time = TimeWithShortPauses()
    module = AnsibleModule(
        argument_spec={
            "gather_subset": {"type": "list", "elements": "str", "default": ["all"]},
            "gather_timeout": {"type": "int", "default": 10},
            "filter": {"type": "list", "elements": "str", "default": []},
            "fact_path": {"type": "path", "default": "/etc/ansible/facts.d"},
        },
        supports_check_mode=True,
    )
    try:
        collector = ansible_collector.get_ansible_collector(
            all_collector_classes=default_collectors.collectors,
            namespace=PrefixFactNamespace(namespace_name="ansible", prefix="ansible_"),
            filter_spec=module.params["filter"],
            gather_subset=module.params["gather_subset"],
            gather_timeout=module.params["gather_timeout"],
            minimal_gather_subset=MINIMAL_SUBSET,
        )
    except (TypeError, CollectorNotFoundError, CycleFoundInFactDeps, UnresolvedFactDep) as error:
        module.fail_json(msg=str(error))  # a subset that names no collector, or collectors that conflict
    module.exit_json(changed=False, ansible_facts=with_image_facts(collector.collect(module=module)))


if __name__ == "__main__":
    main()
