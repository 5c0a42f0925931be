#!/usr/bin/python3
"""Reports where this run's ansible.module_utils.basic was imported from."""

from __future__ import annotations

import sys

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec={})
    module.exit_json(changed=False, basic=sys.modules["ansible.module_utils.basic"].__file__)


if __name__ == "__main__":
    main()
