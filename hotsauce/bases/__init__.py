"""Where an image's root comes from: Debian bases from the host's mirror, and `download:` tarballs."""
