"""privacy-filter: find people in video and hide them, or hide everything but them.

Data flows one way: a source (``io``) → the filter stage (``stage``: segmentation from
``engines`` or ``gpu``, effects from ``effects`` or ``gpu``) → a sink (``io``).

The public API is re-exported here and resolved lazily (PEP 562), so ``import privacy_filter``
loads neither PyAV, pyzmq, CuPy nor TensorRT; each is imported when the first name that needs it
is used::

    import privacy_filter as pf

    pf.process("in.mp4", "out.mp4", preset="cctv")             # one call, as the CLI does

    seg = pf.create_segmenter("selfie")                         # or the building blocks
    stage = pf.FilterStage(seg, {"cam": pf.StageStream(effect=pf.EffectConfig(kind="blur"))})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # one call
    "process": "privacy_filter.pipeline",
    "run_process": "privacy_filter.pipeline",
    "ProcessPlan": "privacy_filter.pipeline",
    "ProcessReport": "privacy_filter.pipeline",
    "plan_from_stream_config": "privacy_filter.pipeline",
    "run_service": "privacy_filter.service.supervisor",
    # sources and sinks
    "open_source": "privacy_filter.io",
    "open_sink": "privacy_filter.io",
    "Source": "privacy_filter.io.base",
    "Sink": "privacy_filter.io.base",
    "EncodeSettings": "privacy_filter.io.av_sink",
    # the stage and its components
    "FilterStage": "privacy_filter.stage",
    "StageStream": "privacy_filter.stage",
    "StageResult": "privacy_filter.stage",
    "create_segmenter": "privacy_filter.backends",
    "create_stream_effect": "privacy_filter.backends",
    "Segmenter": "privacy_filter.engines.base",
    "StreamEffect": "privacy_filter.effects",
    # data
    "YuvFrame": "privacy_filter.frames",
    "VideoInfo": "privacy_filter.media",
    "AudioInfo": "privacy_filter.media",
    "AudioPacket": "privacy_filter.media",
    "SourceInfo": "privacy_filter.media",
    # configuration
    "EffectConfig": "privacy_filter.config",
    "MaskConfig": "privacy_filter.config",
    "StreamConfig": "privacy_filter.config",
    "ServiceConfig": "privacy_filter.config",
    "stream_config": "privacy_filter.config",
    "load_service": "privacy_filter.config",
    # errors
    "UserError": "privacy_filter.errors",
    "ConfigError": "privacy_filter.errors",
    "ModelError": "privacy_filter.errors",
    "SourceError": "privacy_filter.errors",
    "ProtocolError": "privacy_filter.errors",
}

__all__ = [
    "__version__",
    "AudioInfo",
    "AudioPacket",
    "ConfigError",
    "EffectConfig",
    "EncodeSettings",
    "FilterStage",
    "MaskConfig",
    "ModelError",
    "ProcessPlan",
    "ProcessReport",
    "ProtocolError",
    "Segmenter",
    "ServiceConfig",
    "Sink",
    "Source",
    "SourceError",
    "SourceInfo",
    "StageResult",
    "StageStream",
    "StreamConfig",
    "StreamEffect",
    "UserError",
    "VideoInfo",
    "YuvFrame",
    "create_segmenter",
    "create_stream_effect",
    "load_service",
    "open_sink",
    "open_source",
    "plan_from_stream_config",
    "process",
    "run_process",
    "run_service",
    "stream_config",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'privacy_filter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and editors see; nothing here runs
    from privacy_filter.backends import create_segmenter, create_stream_effect
    from privacy_filter.config import EffectConfig, MaskConfig, ServiceConfig, StreamConfig, load_service, stream_config
    from privacy_filter.effects import StreamEffect
    from privacy_filter.engines.base import Segmenter
    from privacy_filter.errors import ConfigError, ModelError, ProtocolError, SourceError, UserError
    from privacy_filter.frames import YuvFrame
    from privacy_filter.io import open_sink, open_source
    from privacy_filter.io.av_sink import EncodeSettings
    from privacy_filter.io.base import Sink, Source
    from privacy_filter.media import AudioInfo, AudioPacket, SourceInfo, VideoInfo
    from privacy_filter.pipeline import ProcessPlan, ProcessReport, plan_from_stream_config, process, run_process
    from privacy_filter.service.supervisor import run_service
    from privacy_filter.stage import FilterStage, StageResult, StageStream
