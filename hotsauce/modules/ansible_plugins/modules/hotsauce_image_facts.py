#!/usr/bin/python
"""Facts about the image as it will boot, where the setup module sees the build host.

With /proc mounted in the chroot, setup reads the build host's PID 1 and
reports the host's service manager; this module, run after setup, reports
the one the image's own /sbin/init will start.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = """
module: hotsauce_image_facts
short_description: the service manager an image root will boot with
description: Returns ansible_facts.service_mgr for the image rather than the build host.
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


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.exit_json(changed=False, ansible_facts={"service_mgr": boot_service_manager()})


if __name__ == "__main__":
    main()
