"""Exceptions a user can act on.

Anything raised as ``UserError`` (or a subclass) is printed by the CLI as a single
line naming the problem, with exit status 2.  Messages must name the thing that is
wrong (the file, the stream, the field, the tensor) and, where it helps, what is allowed.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, files or configuration."""


class ConfigError(UserError):
    """An invalid configuration; the message names the stream and the field."""


class ModelError(UserError):
    """A model that cannot be found, loaded, or does not match its spec."""


class SourceError(UserError):
    """A source that cannot be opened or decoded (missing, corrupt, unreachable)."""


class ProtocolError(ValueError):
    """A malformed wire message.  Receivers count and drop these; they never crash."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


#: Every ``ProtocolError.kind`` a receiver can count (metrics label values).
BAD_KINDS = (
    "parts",  # missing or extra multipart parts
    "header-size",  # header larger than MAX_HEADER_BYTES
    "json",  # header is not a UTF-8 JSON object
    "version",  # unknown protocol version
    "kind",  # unknown message kind
    "field",  # a header field missing or of the wrong type/range
    "size",  # a plane/mask/packet size inconsistent with geometry and stride
)
