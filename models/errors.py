"""One exception root for everything in ``models/``.

A model artefact is data that came from disk or another process: a truncated file, a checksum
that does not match, features of another version, bytes that do not unpickle. Each of these is a
:class:`ModelError` with a message that says which file and why, so a caller (the worker, the
CLI, the registry's gate) catches one type and keeps serving with the model it already has.
"""

from __future__ import annotations

from only1mcp.errors import Only1MCPError

__all__ = ["ModelError", "InsufficientData", "ParityError", "GateRefused"]


class ModelError(Only1MCPError):
    """A model or artefact cannot be trained, exported, loaded or promoted; the message says why."""


class InsufficientData(ModelError):
    """Too few training rows in the requested window: nothing was trained or registered."""


class ParityError(ModelError):
    """The ONNX export disagrees with the native model beyond the tolerance: nothing was exported."""


class GateRefused(ModelError):
    """A promotion the gate refused (raised only where a caller asked for an exception)."""
