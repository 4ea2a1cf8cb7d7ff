"""payesh — watch cities from space."""

__version__ = "0.1.0"
