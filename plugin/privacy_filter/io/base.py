"""The two seams of the pipeline: what a source gives and what a sink takes.

Every source (a PyAV ``Decoder``, a native ``ZmqSource``, an imagezmq/NetGear ``PeerSource``)
and every sink (a PyAV ``Encoder``, a ``ZmqSink``) implements one of these protocols in full,
so the drivers (``process``, the service workers) never probe an object for what it can do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from privacy_filter.frames import YuvFrame
from privacy_filter.media import AudioPacket, SourceInfo


class Source(Protocol):
    """Frames and compressed audio of one stream, in the order they must be written.

    ``open()`` returns what the sink needs before the first frame; iterating yields
    ``YuvFrame`` and ``AudioPacket`` items; ``stop()`` may be called from another thread to
    end a blocking read; ``close()`` releases the source and is called from the reading thread.
    """

    url: str
    live: bool
    reconnects: int  # reconnects after a live source dropped (0 where the transport hides them)
    frames_resized: int  # pictures of another size than the first, scaled to it
    end_reason: str | None  # why an upstream ended the stream (ZeroMQ eos), None where not told
    upstream_stream: str | None  # the stream id an upstream stage announced, None for media sources

    @property
    def bad(self) -> dict[str, int]:
        """Malformed messages dropped, by kind (empty for media sources)."""
        ...

    def open(self) -> SourceInfo: ...

    def __iter__(self) -> Iterator[YuvFrame | AudioPacket]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Filtered frames (with their masks, where the sink carries them) and audio, in order.

    ``end_reason`` is what a ZeroMQ sink tells the next stage when closed (end, stop, error);
    file sinks ignore it.
    """

    end_reason: str
    frames_out: int  # pictures written
    pts_repaired: int  # timestamps the sink had to move forward to keep them increasing

    def write(self, frame: YuvFrame, mask: np.ndarray | None = None) -> None: ...

    def write_audio(self, packet: AudioPacket) -> None: ...

    def close(self) -> None: ...
