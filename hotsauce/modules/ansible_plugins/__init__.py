"""Ansible plugins of hotsauce's own: the chroot connection and the image facts module.

Ansible loads them by folder (ANSIBLE_CONNECTION_PLUGINS, ANSIBLE_LIBRARY),
never by importing this package.
"""

from pathlib import Path

PLUGINS = Path(__file__).resolve().parent
CONNECTION_PLUGINS = PLUGINS / "connection"
MODULES = PLUGINS / "modules"
