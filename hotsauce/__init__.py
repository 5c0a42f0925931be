"""hotsauce: a modular disk-image builder."""

__version__ = "0.1.0"
