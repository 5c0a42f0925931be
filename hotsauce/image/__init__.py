"""The disk image: the raw file, its partition table, filesystem and mounts, root archives,
and the image's identity and scrub."""
