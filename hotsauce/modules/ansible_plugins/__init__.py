"""Ansible plugins of hotsauce's own: the chroot connection, the image facts module, and the
callback that keeps what payload builds learn between runs.

Ansible loads them by folder (ANSIBLE_CONNECTION_PLUGINS, ANSIBLE_LIBRARY,
ANSIBLE_CALLBACK_PLUGINS), never by importing this package.
"""

from pathlib import Path

PLUGINS = Path(__file__).resolve().parent
CONNECTION_PLUGINS = PLUGINS / "connection"
MODULES = PLUGINS / "modules"
CALLBACK_PLUGINS = PLUGINS / "callback"
PAYLOAD_MEMO_CALLBACK = "hotsauce_payload_memo"
