"""edge-agent: authenticity checks for medical images at the point of capture."""

__version__ = "0.1.0"
