"""Booting a finished set in QEMU and checking it from inside (`hotsauce boot`)."""
