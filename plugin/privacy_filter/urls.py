"""Which kind of source or sink a URL names, decided from its text alone.

Config validation, the CLI and the I/O factories all need these answers; keeping them here,
free of PyAV and pyzmq, lets the config layer validate URLs without importing any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from privacy_filter.errors import ConfigError

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp")


NETWORK_SCHEMES = LIVE_SCHEMES + ("http", "https")


def is_live_source(url: str) -> bool:
    """Network streams and capture devices are live; files and lavfi generators are not.

    http(s) is live only for playlists (``.m3u8``): a plain http URL is usually a file.
    """
    u = str(url)
    scheme = u.split("://", 1)[0].lower() if "://" in u else ""
    if scheme in LIVE_SCHEMES:
        return True
    if scheme in ("http", "https"):
        return ".m3u8" in u.lower()
    return u.startswith("/dev/video") or u.startswith("v4l2:")


#: pattern -> (role, binds by default)
PATTERNS: dict[str, tuple[str, bool]] = {
    "pull": ("source", True),
    "sub": ("source", False),
    "push": ("output", False),
    "pub": ("output", True),
}


_TRANSPORTS = ("tcp", "ipc", "inproc")


@dataclass(frozen=True)
class ZmqUrl:
    """A parsed ``zmq+...`` URL."""

    url: str
    pattern: str  # pull | sub | push | pub
    bind: bool
    endpoint: str  # what zmq bind()/connect() get

    @property
    def live(self) -> bool:
        """SUB/PUB never wait for a peer, so a stream read from SUB is live; PULL gives backpressure."""
        return self.pattern in ("sub", "pub")


def is_zmq_url(url: str) -> bool:
    """``zmq+...://`` (native protocol peer); the imagezmq/NetGear schemes are not."""
    return str(url).lower().startswith("zmq+")


def parse_zmq_url(url: str, role: str) -> ZmqUrl:
    """Validate a ``zmq+`` URL for ``role`` (``source`` or ``output``); ConfigError names what is wrong."""
    u = str(url)
    scheme, sep, rest = u.partition("://")
    parts = scheme.lower().split("+")
    allowed = ", ".join(f"zmq+{p}://" for p, (r, _) in PATTERNS.items() if r == role)
    if not sep or parts[0] != "zmq" or len(parts) not in (2, 3) or parts[1] not in PATTERNS:
        raise ConfigError(f"{u!r}: a ZeroMQ {role} URL is zmq+PATTERN[+bind|+connect]://ENDPOINT with PATTERN one of {allowed}")
    pattern = parts[1]
    if PATTERNS[pattern][0] != role:
        other = "an output" if role == "source" else "a source"
        raise ConfigError(f"{u!r}: zmq+{pattern} is {other} pattern; a {role} uses {allowed}")
    bind = PATTERNS[pattern][1]
    if len(parts) == 3:
        if parts[2] not in ("bind", "connect"):
            raise ConfigError(f"{u!r}: {parts[2]!r} must be 'bind' or 'connect' (zmq+{pattern}+bind://...)")
        bind = parts[2] == "bind"
    if not rest:
        raise ConfigError(f"{u!r}: no endpoint; e.g. zmq+{pattern}://tcp://127.0.0.1:5555 or zmq+{pattern}://ipc:///tmp/stage.sock")
    if "://" in rest:
        transport, _, addr = rest.partition("://")
        if transport.lower() not in _TRANSPORTS:
            raise ConfigError(f"{u!r}: transport {transport!r} is not one of {', '.join(_TRANSPORTS)}")
        endpoint = rest
    else:
        addr = rest
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ConfigError(f"{u!r}: {rest!r} is neither a ZeroMQ endpoint (tcp://, ipc://, inproc://) nor HOST:PORT")
        endpoint = "tcp://" + rest
    if not addr:
        raise ConfigError(f"{u!r}: endpoint {endpoint!r} has no address")
    if not bind and endpoint.startswith("tcp://") and ("*" in addr or addr.startswith("0.0.0.0")):
        raise ConfigError(f"{u!r}: cannot connect to {endpoint!r}; use a host name, or zmq+{pattern}+bind:// to bind")
    return ZmqUrl(u, pattern, bind, endpoint)


#: Source URLs that receive from foreign peers (imagezmq, NetGear); ``io.peer`` maps each to its socket.
PEER_SCHEME_NAMES = ("imagezmq+rep", "imagezmq+sub", "netgear+sub", "netgear+rep")


def is_peer_url(url: str) -> bool:
    """``imagezmq+...://`` or ``netgear+...://``: a source fed by a foreign ZeroMQ sender."""
    return str(url).split("://", 1)[0].lower() in PEER_SCHEME_NAMES
