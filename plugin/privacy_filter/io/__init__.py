"""Sources and sinks, one module per kind, behind the ``Source`` and ``Sink`` protocols.

==================  ===========================  ==========================
kind                source                       sink
==================  ===========================  ==========================
media (PyAV)        ``av_source.Decoder``        ``av_sink.Encoder``
native ZeroMQ       ``zmq_native.ZmqSource``     ``zmq_native.ZmqSink``
imagezmq / NetGear  ``peer.PeerSource``          (none: they only send)
==================  ===========================  ==========================

``open_source(url)`` and ``open_sink(url, ...)`` choose by the URL's scheme (``urls``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from privacy_filter.io.base import Sink, Source
from privacy_filter.media import AudioInfo, VideoInfo
from privacy_filter.urls import is_peer_url, is_zmq_url

if TYPE_CHECKING:  # the media modules import PyAV: only when a media source or sink is opened
    from privacy_filter.io.av_sink import EncodeSettings
    from privacy_filter.io.av_source import ReconnectPolicy

__all__ = ["Sink", "Source", "open_sink", "open_source"]


def open_source(
    url: str,
    *,
    stream_id: str = "0",
    audio: bool = True,
    live: bool | None = None,
    reconnect: ReconnectPolicy | None = None,
    counters: Any = None,
    should_stop: Any = None,
    hwm: int = 4,
    size: tuple[int, int] | None = None,
    low_memory: bool = False,
) -> Source:
    """The reader for ``url``: a ``Decoder``, or for ZeroMQ peers a source shaped like one.

    ``zmq+pull://`` / ``zmq+sub://`` read native protocol messages from an upstream stage
    (``io.zmq_native``); ``imagezmq+...`` / ``netgear+...`` read packed pictures
    (``io.peer``, always live).  ``size`` (width, height) fixes a peer stream's picture size
    (a restarted service worker: the stream keeps the size it has); other sources ignore it.
    ``low_memory`` (``output.low_memory``): a media source copies its pictures into a pool
    (``PicturePool``) instead of fresh buffers, and decodes up to 1080p on one thread.
    """
    from privacy_filter.io.av_source import Decoder
    from privacy_filter.io.peer import PeerSource
    from privacy_filter.io.zmq_native import ZmqSource

    if is_zmq_url(url):
        return ZmqSource(url, stream_id=stream_id, audio=audio, live=live, counters=counters, should_stop=should_stop, hwm=hwm)
    if is_peer_url(url):
        return PeerSource(url, stream_id=stream_id, counters=counters, should_stop=should_stop, hwm=hwm, size=size)
    return Decoder(url, stream_id=stream_id, audio=audio, live=live, reconnect=reconnect, should_stop=should_stop, low_memory=low_memory)


def open_sink(
    url: str,
    video: VideoInfo,
    settings: EncodeSettings | None = None,
    *,
    audio: Any = None,
    audio_info: AudioInfo | None = None,
    live: bool = False,
    stream_id: str = "0",
    hwm: int = 4,
) -> Sink:
    """The writer for ``url``: an ``Encoder``, or for ``zmq+push://`` / ``zmq+pub://`` a ``ZmqSink``.

    ``audio`` is what the ``Encoder`` copies from (a PyAV stream template or ``AudioInfo``);
    a ZeroMQ sink announces ``audio_info`` (or ``audio`` when that is an ``AudioInfo``).
    Both honour ``settings.audio`` (copy | drop); the sink also ``settings.mask``.
    """
    from privacy_filter.io.av_sink import Encoder, EncodeSettings
    from privacy_filter.io.zmq_native import ZmqSink

    settings = settings or EncodeSettings()
    if is_zmq_url(url):
        info = audio_info if audio_info is not None else (audio if isinstance(audio, AudioInfo) else None)
        return ZmqSink(url, video, stream_id=stream_id, audio=info if settings.audio == "copy" else None, mask=settings.mask, hwm=hwm)
    return Encoder(url, video, settings, audio=audio, live=live)
