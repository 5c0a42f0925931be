"""A built-in Python module: record what built the image in a file of the image."""

from __future__ import annotations

import json
from typing import Any

from hotsauce import __version__
from hotsauce.rootpath import inside

CONFIG_KEYS = {
    "build_info_file": {
        "type": "string",
        "default": "/etc/hotsauce-release",
        "help": "build_info: where in the image the hotsauce version and module list are recorded",
    },
}


def modify(name: str, root: str, cfg: dict[str, Any]) -> None:
    modules = [m if isinstance(m, str) else json.dumps(m, sort_keys=True) for m in cfg.get("modules") or []]
    release = inside(root, cfg["build_info_file"])
    release.write_text(
        f"HOTSAUCE_VERSION={__version__}\n"
        f"HOTSAUCE_MODULES={json.dumps(modules)}\n"
    )
