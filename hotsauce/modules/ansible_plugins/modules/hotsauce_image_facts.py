#!/usr/bin/python
"""Facts about the image as it will boot, where the setup module sees the build host.

With /proc mounted in the chroot, setup reads the build host's PID 1 and
reports the host's service manager; this module, run after setup, reports
the one the image's own /sbin/init will start. Likewise the names (hostname,
nodename, fqdn, domain) are the image's own /etc/hostname, virtualization is
none, and what setup reads from the host's network, firmware and kernel that
would name the build host (its addresses, serial numbers, machine UUID) is
emptied: nothing of the build host may be templated into an image.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = """
module: hotsauce_image_facts
short_description: the service manager an image root will boot with
description: Returns ansible_facts.service_mgr, the names and virtualization for the image rather than the build host.
options: {}
author: hotsauce
"""

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
# gathers from the build host's interfaces and firmware are emptied, not guessed.
# None, because gather_facts merges a mapping or list into setup's instead of replacing it.
NO_HOST_VALUES: dict[str, object | None] = {
    "default_ipv4": None,
    "default_ipv6": None,
    "all_ipv4_addresses": None,
    "all_ipv6_addresses": None,
    "product_uuid": "NA",
    "product_serial": "NA",
    "board_serial": "NA",
    "chassis_serial": "NA",
    "virtualization_type": "none",
    "virtualization_role": "none",
    "virtualization_tech_guest": None,
    "virtualization_tech_host": None,
}


def image_facts() -> dict[str, object]:
    facts: dict[str, object] = {"service_mgr": boot_service_manager()}
    facts.update(name_facts(image_hostname()))
    facts.update(NO_HOST_VALUES)
    return facts


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    # Prefixed as setup returns them, so that ours replace its values (ansible_hostname and
    # ansible_facts.hostname alike) instead of standing beside them.
    prefixed = {f"ansible_{name}": value for name, value in image_facts().items()}
    module.exit_json(changed=False, ansible_facts=prefixed)


if __name__ == "__main__":
    main()
