"""The image set: converting the root image, the boot files, libvirt.xml, checksums and
publishing the set at `-o`."""
