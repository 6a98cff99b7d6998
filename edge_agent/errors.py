"""One exception tree for edge-agent.

    EdgeAgentError
    ├── ConfigError          a config key is unknown, mistyped or points at a missing file
    ├── ModelError           a shipped model is missing, altered, or cannot run
    │   └── ModelIntegrityError   a file's sha256 differs from the manifest
    ├── UnreadableImage      an input cannot be decoded (carries a machine-readable code)
    └── IngestError          an ingestion path (spool, hot folder, C-STORE) cannot accept an image

Every message says what was expected, what was found, and what to do.
"""

from __future__ import annotations

__all__ = [
    "EdgeAgentError",
    "ConfigError",
    "ModelError",
    "ModelIntegrityError",
    "UnreadableImage",
    "IngestError",
]


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """The configuration cannot be used; the message names the key and the expected form."""


class ModelError(EdgeAgentError):
    """A model cannot be loaded or run."""


class ModelIntegrityError(ModelError):
    """A model file does not match the sha256 its manifest records."""


class IngestError(EdgeAgentError):
    """An image could not be accepted by an ingestion path."""


class UnreadableImage(EdgeAgentError):
    """An input could not be decoded into pixels.

    ``code`` is short and machine-readable (e.g. ``truncated``, ``no_pixel_data``);
    ``str(self)`` is the sentence for a person.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
