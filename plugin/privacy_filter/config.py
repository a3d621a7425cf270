"""Configuration: what each stream does, validated once at the edge (pydantic-settings).

A YAML file holds ``defaults:`` and ``streams:``; environment variables with the
``PRIVACY_FILTER_`` prefix and CLI flags override it.  Every model here is strict
(``extra="forbid"``) so that a typo is an error naming the stream and the field,
never a silently ignored setting.

This module is shared by the CPU and GPU backends: both read the same
``MaskConfig`` and ``EffectConfig``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from privacy_filter.errors import ConfigError


def _rgb(value: Any) -> Any:
    """Every problem of a colour at once: ``[300, 0]`` is both short and out of range, and a
    message naming only the first sends the user round twice."""
    if not isinstance(value, (list, tuple)):
        raise ValueError("must be [R, G, B], each an integer 0..255")
    problems = [] if len(value) == 3 else [f"{len(value)} value{'s' if len(value) != 1 else ''} given, 3 needed"]
    for i, c in enumerate(value):
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255:
            problems.append(f"[{i}] = {c!r} is not an integer 0..255")
    if problems:
        raise ValueError(f"must be [R, G, B], each an integer 0..255: {'; '.join(problems)}")
    return tuple(value)


RGB = Annotated[tuple[int, int, int], BeforeValidator(_rgb)]


def parse_bitrate(value: str | int | None) -> int | None:
    """'4M' → 4000000, '800k' → 800000, ints pass through."""
    if value is None or isinstance(value, int):
        return value
    s = str(value).strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(s[-1:], 1)
    try:
        return int(float(s[:-1] if mult != 1 else s) * mult)
    except ValueError as exc:
        raise ConfigError(f"bitrate {value!r} is not a number such as 4000000, '4M' or '800k'") from exc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MaskConfig(_Strict):
    """How a model-resolution person probability becomes a frame-size alpha mask.

    Order (identical on every backend, see docs/effects.md):
    temporal (hold/smooth, at model resolution) → bilinear upsample to frame size →
    threshold → square dilation → box feather → alpha in 0..255.
    """

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="person if probability >= threshold")
    dilate_px: int | None = Field(None, ge=0, le=512, description="dilation radius in pixels")
    dilate_frac: float = Field(0.0, ge=0.0, le=0.25, description="dilation radius as a fraction of frame height (used when dilate_px is unset)")
    feather_px: int = Field(0, ge=0, le=256, description="box-feather radius in pixels; soft edge width")
    temporal: Literal["none", "hold", "smooth"] = "none"
    hold_frames: int = Field(5, ge=1, le=120, description="hold: max over the last N masks")
    smooth_alpha: float = Field(0.6, gt=0.0, le=1.0, description="smooth: EMA weight of the newest mask")

    def dilate_radius(self, frame_height: int) -> int:
        """Dilation radius in pixels for a frame of this height."""
        if self.dilate_px is not None:
            return int(self.dilate_px)
        return int(round(self.dilate_frac * frame_height))


class EffectConfig(_Strict):
    """What is done to the covered pixels.

    ``target: person`` covers people; ``target: background`` covers everything else.
    Colours are RGB 0..255 and are converted to YUV with ``color_matrix``.
    """

    kind: Literal["pixelate", "fill", "blur", "replace", "overlay", "none"] = "pixelate"
    target: Literal["person", "background"] = "person"
    color: RGB = (0, 0, 0)
    color_matrix: Literal["bt601", "bt709"] = "bt601"
    block_px: int | None = Field(None, ge=2, le=512, description="pixelate cell size in pixels (even)")
    block_frac: float = Field(1 / 24, gt=0.0, le=0.5, description="pixelate cell size as a fraction of frame height, when block_px is unset")
    blur_radius_px: int | None = Field(None, ge=1, le=1024)
    blur_radius_frac: float = Field(0.03, gt=0.0, le=0.5, description="blur radius as a fraction of frame height, when blur_radius_px is unset")
    replace_image: str | None = Field(None, description="replace: path of a still image scaled to the frame")
    replace_video: str | None = Field(None, description="replace: path of a video looped and scaled to the frame")
    overlay_opacity: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> EffectConfig:
        if self.block_px is not None and self.block_px % 2:
            raise ValueError(f"block_px must be even so that chroma cells align (got {self.block_px})")
        if self.replace_image and self.replace_video:
            raise ValueError("set only one of replace_image and replace_video")
        return self

    def block_size(self, frame_height: int) -> int:
        """Even pixelation cell size in luma pixels for a frame of this height (≥ 2)."""
        if self.block_px is not None:
            return int(self.block_px)
        b = int(round(self.block_frac * frame_height))
        return max(2, b + (b % 2))

    def blur_radius(self, frame_height: int) -> int:
        if self.blur_radius_px is not None:
            return int(self.blur_radius_px)
        return max(1, int(round(self.blur_radius_frac * frame_height)))


# =========================================================================== CCTV: people, motion, zones
#
# Defaults are the measured CCTV operating point (docs/cctv.md); the detector is off unless a
# preset or config turns it on, so video-call streams keep the full-frame segmentation.


class DetectorConfig(_Strict):
    """The person detector that feeds the CCTV cover (docs/cctv.md)."""

    name: str = Field("none", min_length=1, description="nanodet, none (no detector), a path to a detector .onnx, or a TensorRT engine from `privacy-filter engine build nanodet`")
    long_side: int | None = Field(None, ge=128, le=4096, description="detector input long side in pixels; unset: the source's long side clamped to 512..640")
    score: float = Field(0.2, gt=0.0, lt=1.0, description="person score threshold; 0.2 is privacy-first (0.3 is the balanced point)")
    precision: Literal["auto", "int8", "fp32"] = Field(
        "auto",
        description="auto: the built-in nanodet runs as an INT8 copy on the CPU (0.64x the CPU time, same coverage; docs/cctv.md) and as float elsewhere; int8 / fp32: always that",
    )
    every: int = Field(
        1,
        ge=1,
        le=30,
        description="run the detector on every Nth frame at most; in between, files get boxes moved from one run to the next and live sources the last run's boxes (docs/cctv.md)",
    )
    rate: float | None = Field(
        None,
        gt=0.0,
        le=240.0,
        description="detector runs per second of video: on sources faster than this the detector runs on every Nth frame, N = max(every, floor(fps / rate)); unset: every Nth frame, N = every",
    )
    file_every: int = Field(
        1,
        ge=1,
        le=30,
        description="file sources, whose boxes between runs are moved from one run to the next: the detector on every Nth frame at least, as long as that leaves min_rate runs per second (docs/cctv.md)",
    )
    min_rate: float = Field(3.5, gt=0.0, le=240.0, description="file_every never leaves fewer detector runs per second than this")
    hold_missed: int = Field(2, ge=0, le=30, description="keep a box that the next detector runs do not find again for this many runs")
    pad_frac: float = Field(0.01, ge=0.0, le=0.25, description="grow each box on every side by this fraction of the frame height")
    head_extra: float = Field(0.10, ge=0.0, le=1.0, description="grow each box upwards by this fraction of its own height (detector boxes often end low at the head)")
    fill_score: float = Field(
        0.3,
        ge=0.0,
        lt=1.0,
        description="cover: segment: a box whose crop mask is (nearly) empty is filled whole when its score is at least this; a weaker box that the segmenter also finds empty is left (docs/cctv.md); 0: fill every such box",
    )

    @property
    def enabled(self) -> bool:
        return self.name.lower() != "none"

    def every_at(self, fps: float, moved: bool = False) -> int:
        """Frames between detector runs for a source of ``fps``: ``max(every, floor(fps / rate))``.

        ``moved``: the frames between runs get boxes moved from one run to the next (files whose
        frames are filtered in groups, ``PersonFinder.frames_per_call``), which keeps people
        covered over longer gaps than boxes held still: then at least every ``file_every``th
        frame, unless that leaves fewer than ``min_rate`` runs per second.
        """
        n = self.every if self.rate is None or fps <= 0 else max(self.every, int(fps / self.rate + 1e-9))
        if moved and fps > 0 and self.file_every > n:
            n = max(n, min(self.file_every, int(fps / self.min_rate + 1e-9)))
        return n


class MotionConfig(_Strict):
    """Cover whatever moves against a learned background (docs/cctv.md, "Motion")."""

    enabled: bool = Field(False, description="run the motion layer")
    height: int | None = Field(
        None,
        ge=60,
        le=1080,
        description="processing height in pixels (never above the source's), also the cover map's; null: the source's own height, at most 540",
    )
    threshold: float = Field(22.0, gt=0.0, le=255.0, description="foreground if |luma - background| > threshold")
    open_px: int = Field(3, ge=0, le=15, description="opening kernel in processing pixels: drops noise specks")
    dilate_frac: float = Field(0.02, ge=0.0, le=0.25, description="grow the foreground by this fraction of the height")
    hold_frames: int = Field(2, ge=0, le=30, description="also cover the foreground of this many previous frames")
    history_s: float = Field(20.0, gt=0.0, le=3600.0, description="background memory: the running median spans this many seconds")
    learn_s: float = Field(3.0, ge=0.0, le=600.0, description="live sources: the whole frame is covered this long while the background is learned")
    global_frac: float = Field(0.5, gt=0.0, le=1.0, description="a foreground share above this is a global change (camera moved, lights): cover whole and relearn")
    relearn_s: float = Field(2.0, ge=0.0, le=600.0, description="after a global change, cover the whole frame this long")
    first_pass: bool = Field(True, description="file sources: learn the background from frames sampled across the file first (no learning period)")
    first_pass_samples: int = Field(25, ge=3, le=500, description="frames sampled for the first pass")


class ZoneConfig(_Strict):
    """A polygon in normalised coordinates (0..1 of width and height)."""

    mode: Literal["privacy", "exclude"] = Field(..., description="privacy: always covered; exclude: no motion cover there (people found by the detector stay covered)")
    points: list[tuple[float, float]] = Field(..., description="[[x, y], ...], at least 3, each coordinate in [0, 1]")

    @model_validator(mode="after")
    def _check(self) -> ZoneConfig:
        if len(self.points) < 3:
            raise ValueError(f"points: a zone needs at least 3 points, got {len(self.points)}")
        for i, (x, y) in enumerate(self.points):
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"points[{i}]: coordinates must be in [0, 1] (fractions of width and height), got [{x}, {y}]")
        return self


# =========================================================================== streams and service
#
# Layers, later wins (documented in docs/service.md and configs/example-service.yaml):
#   field defaults  <  preset fragment (configs/<preset>.yaml)  <  YAML ``defaults:``  <  the stream's own YAML
#   <  PRIVACY_FILTER_DEFAULTS__...  <  PRIVACY_FILTER_STREAMS__<ID>__...  <  CLI flags
# Presets are a base layer: anything written on top of one wins.


def _check_zmq_url(url: str, role: str) -> None:
    """A ``zmq+`` URL must parse for its role; the error says what is allowed (a ValueError for pydantic)."""
    from privacy_filter.urls import is_zmq_url, parse_zmq_url

    if is_zmq_url(url):
        try:
            parse_zmq_url(url, role)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class SourceConfig(_Strict):
    """Where a stream's frames come from.  A bare string in YAML is the ``url``."""

    url: str = Field(
        ...,
        min_length=1,
        description="file, rtsp://, http(s)://, udp://, rtmp://, /dev/videoN, lavfi:SPEC, an upstream ZeroMQ stage: zmq+pull://, zmq+sub:// (native protocol), or a ZeroMQ peer: imagezmq+rep://, imagezmq+sub://, netgear+sub://, netgear+rep://",
    )
    audio: bool = Field(True, description="read the source's audio (it may still be dropped by output.audio)")
    udp_buffer_s: float = Field(2.0, gt=0, le=60.0, description="udp:// only: receive buffer in seconds at udp_max_bitrate (FFmpeg fifo_size)")
    udp_max_bitrate: str | int = Field("8M", description="udp:// only: the highest bitrate the buffer is sized for (bits/s; 8M, 40M, 8000k)")

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v: Any) -> Any:
        return {"url": v} if isinstance(v, str) else v

    def udp_bitrate_bps(self) -> int:
        try:
            bps = parse_bitrate(self.udp_max_bitrate)
        except ConfigError as exc:
            raise ConfigError(f"udp_max_bitrate: {exc}") from None
        if not bps or bps <= 0:
            raise ConfigError(f"source.udp_max_bitrate: {self.udp_max_bitrate!r} is not a positive bitrate")
        return bps

    @model_validator(mode="after")
    def _zmq(self) -> SourceConfig:
        _check_zmq_url(self.url, "source")
        try:
            self.udp_bitrate_bps()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


# Encoder presets and tunes per codec (FFmpeg's own lists: ``ffmpeg -h encoder=libx264`` / ``=h264_nvenc``).
ENCODER_PRESETS: dict[str, tuple[str, ...]] = {
    "libx264": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"),
    "h264_nvenc": ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "default", "slow", "medium", "fast", "hp", "hq", "bd", "ll", "llhq", "llhp", "lossless", "losslesshp"),
}
ENCODER_TUNES: dict[str, tuple[str, ...]] = {
    "libx264": ("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"),
    "h264_nvenc": ("hq", "ll", "ull", "lossless"),
}
#: The preset used when none is set: libx264's fast-enough default here, NVENC's own middle (p4).
DEFAULT_PRESET: dict[str, str] = {"libx264": "veryfast", "h264_nvenc": "p4"}


def check_encoder_settings(codec: str, preset: str | None, tune: str | None) -> None:
    """ValueError naming the allowed values when ``preset``/``tune`` do not belong to ``codec``.

    Codecs without a table here (e.g. ``mpeg4`` in EncodeSettings) are left to FFmpeg.
    """
    for what, value, table in (("preset", preset, ENCODER_PRESETS), ("tune", tune, ENCODER_TUNES)):
        allowed = table.get(codec)
        if value is not None and allowed is not None and value not in allowed:
            raise ValueError(f"{what} {value!r} is not a {codec} {what}; allowed for {codec}: {', '.join(allowed)}")


class OutputConfig(_Strict):
    """Where filtered frames go and how they are encoded.  A bare string in YAML is the ``url``.

    For service outputs prefer ``.mkv`` (or ``.ts``): a Matroska file killed mid-write
    still plays up to the last cluster, whereas an MP4 needs its ``moov`` written at
    close (every clean stop does; fragmented MP4 did not survive a SIGKILL in our test,
    see docs/service.md).
    """

    url: str = Field(
        "", description="output file or URL (mp4, mkv, ts, udp://, rtmp://, rtsp://, .m3u8), or the next ZeroMQ stage: zmq+push://, zmq+pub:// (native protocol, with masks)"
    )
    format: str | None = Field(None, description="container format when the url does not say (e.g. mpegts, flv, rtsp, hls)")
    codec: Literal["libx264", "h264_nvenc"] = "libx264"
    preset: str | None = Field(
        None, description="encoder preset, checked against codec (libx264: ultrafast..placebo, default veryfast; h264_nvenc: p1..p7 or its named presets, default p4)"
    )
    tune: str | None = Field(None, description="encoder tune, checked against codec (libx264: e.g. zerolatency for live outputs; h264_nvenc: hq, ll, ull, lossless)")
    bitrate: str | None = Field(None, pattern=r"^[0-9]+(\.[0-9]+)?[kKmM]?$", description="target bitrate, e.g. 2M or 800k (unset: crf)")
    crf: int | None = Field(None, ge=0, le=51, description="constant quality when no bitrate is set (libx264 default 23)")
    gop: int | None = Field(None, ge=1, le=10000, description="keyframe interval in frames")
    audio: Literal["copy", "drop"] = Field("copy", description="copy the source's audio packets bit for bit, or drop audio")
    mask: bool = Field(True, description="ZeroMQ outputs: send each frame's mask (255 = covered) as a 5th part; other outputs ignore it")
    low_memory: bool = Field(
        False,
        description="libx264: one encoding thread with the lookahead in it; `process` decodes sources up to 1080p on one thread and maps picture-sized heap blocks on their own: ~80 MiB less per 1080p stream, but up to ~30 % fewer fps where the encoder is the bottleneck (the cctv preset turns it on)",
    )
    overwrite: bool | None = Field(
        None, description="an existing output file: unset replaces it with a warning; true replaces it quietly (ffmpeg's -y); false refuses to start (ffmpeg's -n)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v: Any) -> Any:
        return {"url": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _zmq(self) -> OutputConfig:
        _check_zmq_url(self.url, "output")
        check_encoder_settings(self.codec, self.preset, self.tune)
        return self

    def bitrate_bps(self) -> int | None:
        if self.bitrate is None:
            return None
        s = self.bitrate.lower()
        mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
        return int(float(s.rstrip("km")) * mult)


class StreamConfig(_Strict):
    """Everything one stream does, validated once."""

    id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="stream id: letters, digits, _ . - (used in metrics and file names)")
    source: SourceConfig
    output: OutputConfig = Field(default_factory=OutputConfig)
    preset: Literal["cctv", "video-call"] | None = Field(None, description="base layer loaded from configs/<preset>.yaml")
    model: str = Field("selfie", min_length=1, description="built-in model name or path to an ONNX / spec YAML / DeepStream config")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="shorthand for segmentation_device and effects_device")
    segmentation_device: Literal["cpu", "cuda", "auto"] | None = Field(
        None, description="cpu: ONNX Runtime CPU; cuda: ONNX Runtime CUDA/TensorRT EPs, or TensorRT for an engine; auto: cuda when it can run (unset: device)"
    )
    effects_device: Literal["cpu", "cuda", "auto"] | None = Field(
        None, description="cpu: NumPy/OpenCV; cuda: CuPy raw kernels; auto: cuda when the CUDA probe passes (unset: device)"
    )
    tiles: str | None = Field(None, pattern=r"^(auto|off|[1-9][0-9]?x[1-9][0-9]?)$", description="tiled inference: auto, off or COLSxROWS")
    effect: EffectConfig = Field(default_factory=EffectConfig)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    policy: Literal["live", "file", "auto"] = Field(
        "auto", description="live: drop stale frames, never block the source; file: every frame, backpressure; auto: from the source url"
    )
    on_failure: Literal["cover", "drop", "pass"] = Field(
        "cover", description="when segmentation fails or misses its deadline: cover the frame whole, drop it, or (explicitly) pass it unfiltered"
    )
    deadline_ms: float = Field(5000.0, gt=0, le=600_000, description="segmentation budget per batch; a later mask counts as a failure (fail closed)")
    batch: int = Field(4, ge=1, le=64, description="at most this many frames of this stream in one inference batch")
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    zones: list[ZoneConfig] = Field(default_factory=list, description="privacy and exclude polygons")
    cover: Literal["box", "segment"] = Field(
        "box", description="people found by the detector: box fills each padded box; segment runs the model on square crops (boxes the model misses are filled)"
    )

    @model_validator(mode="after")
    def _tiles_need_segmentation(self) -> StreamConfig:
        if self.tiles not in (None, "off") and self.uses_cover_engine():
            raise ValueError(
                f"tiles: {self.tiles} tiles the full-frame segmentation, which does not run with the cctv cover (detector/motion/zones); "
                "the detector tiles frames above 2560 px itself"
            )
        return self

    def uses_cover_engine(self) -> bool:
        """Whether the CCTV cover (detector, motion, zones) replaces the full-frame segmentation."""
        return self.detector.enabled or self.motion.enabled or bool(self.zones)

    def is_live(self) -> bool:
        """The resolved policy: ``auto`` means live for network streams and devices."""
        if self.policy != "auto":
            return self.policy == "live"
        from privacy_filter.urls import is_live_source, is_peer_url

        if is_peer_url(self.source.url):
            return True
        from privacy_filter.urls import is_zmq_url, parse_zmq_url

        if is_zmq_url(self.source.url):  # zmq+sub is live; zmq+pull has backpressure, like a file
            return parse_zmq_url(self.source.url, "source").live

        return is_live_source(self.source.url)


def local_file(url: str) -> str | None:
    """The filesystem path a source/output string names, or None for URLs, devices, generators."""
    u = str(url)
    if not u or "://" in u or u.startswith(("lavfi:", "v4l2:", "/dev/")):
        return u[len("file://") :] if u.startswith("file://") else None
    return u[len("file:") :] if u.startswith("file:") else u


def existing_output(url: str) -> str | None:
    """The local file ``url`` names, if it exists (a file output that would be replaced), else None."""
    path = local_file(url)
    return path if path and os.path.isfile(path) else None


def same_file(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` name one local file: the same path spelt differently, a symlink or a hard link."""
    pa, pb = local_file(a), local_file(b)
    if pa is None or pb is None:
        return False
    try:
        if os.path.exists(pa) and os.path.exists(pb):
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return os.path.realpath(pa) == os.path.realpath(pb)


class ZmqConfig(_Strict):
    """Transport between the service's worker processes."""

    transport: Literal["ipc", "tcp"] = Field("ipc", description="ipc:// on one host (default), tcp:// to spread roles over hosts")
    host: str = Field("127.0.0.1", description="tcp: address the receiving roles bind and the senders connect to")
    base_port: int = Field(5600, ge=1024, le=65000, description="tcp: first port; stream i uses base_port+2i (stage input) and base_port+2i+1 (encoder input)")
    ipc_dir: str | None = Field(None, description="ipc: socket folder (default: a fresh temporary folder)")
    hwm: int = Field(4, ge=1, le=1000, description="high-water mark (messages) of each socket: backpressure and bounded staleness")
    curve: Literal["on", "off"] | None = Field(
        None,
        description="tcp: ZeroMQ CURVE (authenticated, encrypted) between the workers; required for tcp unless 'off' (anyone "
        "who can reach the ports could then write frames into the recordings); ipc: not used",
    )
    keys: str | None = Field(None, description="CURVE keys: the folder `privacy-filter keys DIR` wrote")

    @model_validator(mode="before")
    @classmethod
    def _curve_words(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `off`/`on` as a boolean
        if isinstance(data, Mapping) and isinstance(data.get("curve"), bool):
            data = {**data, "curve": "on" if data["curve"] else "off"}
        return data

    @model_validator(mode="after")
    def _curve_needs_keys(self) -> ZmqConfig:
        if self.transport == "tcp" and self.curve != "off" and not self.keys:
            raise ValueError(
                "transport tcp needs CURVE keys: run `privacy-filter keys DIR` and set zmq.keys: DIR "
                "(or set zmq.curve: off to run unauthenticated: anyone who can reach the ports can then inject frames)"
            )
        if self.curve == "on" and not self.keys:
            raise ValueError("curve: on needs zmq.keys: DIR (made by `privacy-filter keys DIR`)")
        return self

    def curve_enabled(self) -> bool:
        return self.transport == "tcp" and self.curve != "off" and bool(self.keys)


class MetricsConfig(_Strict):
    port: int | None = Field(None, ge=1, le=65535, description="serve Prometheus /metrics on this port (unset: off)")
    addr: str = Field("127.0.0.1", description="address /metrics listens on: this host only by default; 0.0.0.0 (all interfaces) lets other hosts scrape it")
    dump: str | None = Field(None, description="write a JSON snapshot of all counters here at exit")


class SupervisorConfig(_Strict):
    max_restarts: int = Field(5, ge=0, le=1000, description="per worker; one more crash ends the service with an error")
    backoff_s: float = Field(0.2, ge=0.0, le=60.0, description="first restart delay; doubles per restart of the same worker")
    backoff_max_s: float = Field(5.0, ge=0.0, le=600.0)
    shutdown_timeout_s: float = Field(20.0, gt=0, le=600.0, description="after SIGINT/SIGTERM: time for EOS to flow and outputs to close before workers are killed")
    state_file: str | None = Field(None, description="keep a JSON file of worker pids, restarts and per-stream progress here")


class StageConfig(_Strict):
    batch_max: int = Field(8, ge=1, le=256, description="most frames (all streams) in one inference batch")
    batch_wait_ms: float = Field(2.0, ge=0.0, le=1000.0, description="how long the stage waits to fill a batch")


class ServiceConfig(_Strict):
    """``privacy-filter run CONFIG.yaml``: all streams plus the service's own settings."""

    streams: list[StreamConfig] = Field(..., min_length=1)
    zmq: ZmqConfig = Field(default_factory=ZmqConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    stage: StageConfig = Field(default_factory=StageConfig)

    @model_validator(mode="after")
    def _unique(self) -> ServiceConfig:
        seen: set[str] = set()
        for s in self.streams:
            if s.id in seen:
                raise ValueError(f"stream id {s.id!r} is used twice")
            seen.add(s.id)
        # two encoders writing one file lose one output; an output over a source destroys it
        for i, a in enumerate(self.streams):
            for b in self.streams[i + 1 :]:
                if a.output.url and b.output.url and same_file(a.output.url, b.output.url):
                    raise ValueError(
                        f"streams {a.id!r} and {b.id!r} both write {a.output.url!r}"
                        + (f" (as {b.output.url!r})" if b.output.url != a.output.url else "")
                        + "; give each stream its own output"
                    )
            for b in self.streams:
                if a.output.url and same_file(a.output.url, b.source.url):
                    whose = "its own" if a is b else f"stream {b.id!r}'s"
                    raise ValueError(f"stream {a.id!r} writes {a.output.url!r}, which is {whose} source; writing it would destroy that input")
        return self


# --------------------------------------------------------------------------- loading

ENV_PREFIX = "PRIVACY_FILTER_"
SERVICE_KEYS = ("zmq", "metrics", "supervisor", "stage")
PRESETS = ("cctv", "video-call")


_ENV_LAYER: type | None = None


def _env_layer_class() -> type:
    """The pydantic-settings model of the environment layer, built on first use.

    Deferred because importing pydantic-settings costs ~50 ms at every start, and ``_env``
    needs it only when some ``PRIVACY_FILTER_*`` variable is set.
    """
    global _ENV_LAYER
    if _ENV_LAYER is None:
        from pydantic_settings import BaseSettings, SettingsConfigDict

        class _EnvLayer(BaseSettings):
            """Overrides from the environment, parsed by pydantic-settings into nested dicts.

            ``PRIVACY_FILTER_DEFAULTS__EFFECT__KIND=fill`` → ``{"defaults": {"effect": {"kind": "fill"}}}``;
            ``PRIVACY_FILTER_STREAMS__LOBBY__ON_FAILURE=drop`` → stream ``lobby`` (ids match case-insensitively);
            ``PRIVACY_FILTER_METRICS__PORT=9100``.  JSON values (``[255,0,0]``) are decoded.
            """

            model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", case_sensitive=False)
            defaults: dict[str, Any] = {}
            streams: dict[str, Any] = {}
            zmq: dict[str, Any] = {}
            metrics: dict[str, Any] = {}
            supervisor: dict[str, Any] = {}
            stage: dict[str, Any] = {}

        _ENV_LAYER = _EnvLayer
    return _ENV_LAYER


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge key by key (lists and scalars replace)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def preset_path(name: str) -> Path:
    return _configs_dir() / f"{name}.yaml"


def _configs_dir() -> Path:
    try:
        from importlib.resources import files

        return Path(str(files("privacy_filter.presets")))
    except Exception:  # pragma: no cover - source checkout without the package installed
        return Path(__file__).resolve().parent.parent / "configs"


def load_preset(name: str) -> dict[str, Any]:
    """The fragment of ``configs/<name>.yaml`` (a plain mapping of stream fields)."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is not one of {', '.join(PRESETS)}")
    data = _read_yaml(preset_path(name))
    if not isinstance(data, dict):
        raise ConfigError(f"preset file {preset_path(name)} must hold a mapping of stream fields")
    return data


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None


def _env() -> Any:
    """The environment layer: attributes ``defaults``, ``streams`` and the SERVICE_KEYS, each a dict."""
    if not any(k.upper().startswith(ENV_PREFIX) for k in os.environ):
        # What pydantic-settings yields when no variable carries the prefix (no env_file, no secrets_dir).
        return SimpleNamespace(defaults={}, streams={}, **{k: {} for k in SERVICE_KEYS})
    try:
        return _env_layer_class()()
    except Exception as exc:  # a malformed JSON value in an env var
        raise ConfigError(f"environment variables {ENV_PREFIX}*: {exc}") from None


def _streams_mapping(raw: Any, where: str) -> list[dict[str, Any]]:
    """``streams:`` as a list of mappings with ``id``, or a mapping id → fields."""
    if isinstance(raw, Mapping):
        out = []
        for sid, body in raw.items():
            if body is None:
                body = {}
            if not isinstance(body, Mapping):
                raise ConfigError(f"{where}: stream {sid!r} must be a mapping of fields")
            out.append({"id": str(sid), **body})
        return out
    if isinstance(raw, list):
        for i, body in enumerate(raw):
            if not isinstance(body, Mapping):
                raise ConfigError(f"{where}: streams[{i}] must be a mapping of fields")
        return [dict(b) for b in raw]
    raise ConfigError(f"{where}: 'streams' must be a list of streams or a mapping id -> stream")


def _layer_stream(
    stream: Mapping[str, Any],
    defaults: Mapping[str, Any],
    env: Any,
    cli: Mapping[str, Any] | None,
    *,
    defaults_are_the_stream: bool = False,
) -> dict[str, Any]:
    sid = str(stream.get("id", ""))
    env_stream: Mapping[str, Any] = {}
    for k, v in env.streams.items():
        if k.lower() == sid.lower() and isinstance(v, Mapping):
            env_stream = v
    preset = (cli or {}).get("preset") or env_stream.get("preset") or stream.get("preset") or env.defaults.get("preset") or defaults.get("preset")
    merged: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"stream {sid!r}: preset: must be one of {', '.join(PRESETS)}, got {preset!r}")
        merged = load_preset(str(preset))
    layers = {"defaults": defaults, "stream": stream, "env defaults": env.defaults, "env stream": env_stream, "cli": cli or {}}
    for layer in layers.values():
        merged = deep_merge(merged, _url_shorthand(layer))
    if preset:
        merged["preset"] = preset
    _check_pass_is_explicit(sid, merged, layers, defaults_are_the_stream)
    return merged


def _check_pass_is_explicit(sid: str, merged: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]], defaults_are_the_stream: bool) -> None:
    """Publishing unfiltered frames must be chosen for one stream (DESIGN §5.1), never inherited.

    Allowed sources of ``on_failure: pass``: the stream's own fields, its
    ``PRIVACY_FILTER_STREAMS__<ID>__ON_FAILURE``, and for ``process --config`` the file's
    ``defaults:`` (there they are the one stream's config).  Refused: a service file's
    ``defaults:`` and ``PRIVACY_FILTER_DEFAULTS__ON_FAILURE``, which would apply it to every stream.
    """
    if merged.get("on_failure") != "pass":
        return
    origin = [name for name, layer in layers.items() if "on_failure" in layer][-1:]  # the layer that won
    if origin == ["env defaults"] or (origin == ["defaults"] and not defaults_are_the_stream):
        where = f"{ENV_PREFIX}DEFAULTS__ON_FAILURE" if origin == ["env defaults"] else "defaults:"
        raise ConfigError(
            f"stream {sid!r}: on_failure: pass (publish frames unfiltered) comes from {where}; "
            f"it must be set on that stream itself (streams: {sid}: on_failure: pass, "
            f"or {ENV_PREFIX}STREAMS__{sid.upper()}__ON_FAILURE=pass)"
        )


def _url_shorthand(layer: Mapping[str, Any]) -> Mapping[str, Any]:
    """``source: x.mp4`` / ``output: y.mkv`` → ``{url: ...}`` so they merge with preset fields."""
    fix = {k: {"url": layer[k]} for k in ("source", "output") if isinstance(layer.get(k), str)}
    return {**layer, **fix} if fix else layer


def stream_config(
    source: str,
    output: str,
    *,
    stream_id: str = "main",
    preset: str | None = None,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StreamConfig:
    """One stream for ``privacy-filter process``: the file's ``defaults:`` apply to it.

    ``overrides`` are CLI flags as a nested mapping (e.g. ``{"effect": {"kind": "fill"}}``);
    they beat the environment, which beats the file, which beats the preset.
    """
    defaults: dict[str, Any] = {}
    if config_path is not None:
        data = _read_yaml(Path(config_path)) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{config_path}: top level must be a mapping with defaults: and streams:")
        defaults = dict(data.get("defaults") or {})
    cli = dict(overrides or {})
    if preset:
        cli["preset"] = preset
    raw = _layer_stream({"id": stream_id, "source": source, "output": output}, defaults, _env(), cli, defaults_are_the_stream=True)
    return _validate_stream(raw)


def _validate_stream(raw: dict[str, Any]) -> StreamConfig:
    try:
        return StreamConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, StreamConfig, prefix=f"stream {raw.get('id', '?')!r}")) from None


def load_service(path: str | Path, *, cli: Mapping[str, Any] | None = None) -> ServiceConfig:
    """Read ``CONFIG.yaml``, apply presets, ``defaults:``, env and CLI layers, and validate.

    Raises ``ConfigError`` whose message names the file, the stream and the field.
    """
    path = Path(path)
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping with defaults: and streams:")
    allowed = {"defaults", "streams", *SERVICE_KEYS}
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    if "streams" not in data:
        raise ConfigError(f"{path}: no 'streams:' section; a service needs at least one stream")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{path}: 'defaults' must be a mapping of stream fields")
    env = _env()
    streams, problems = [], []
    for i, s in enumerate(_streams_mapping(data["streams"], str(path))):
        if "id" not in s:
            problems.append(f"streams[{i}]: id: required (letters, digits, _ . -)")
            continue
        try:
            sc = _validate_stream(_layer_stream(s, defaults, env, cli))
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if not sc.output.url:
            problems.append(f"stream {sc.id!r}: output.url: required in service mode (a file path or URL)")
        streams.append(sc)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    service: dict[str, Any] = {"streams": streams}
    for key in SERVICE_KEYS:
        layer = deep_merge(dict(data.get(key) or {}), getattr(env, key))
        if layer:
            service[key] = layer
    try:
        return ServiceConfig.model_validate(service)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, ServiceConfig, prefix=str(path))) from None


# --------------------------------------------------------------------------- error messages


def _submodel(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class found by walking ``loc`` through ``model``'s fields (None if not a model)."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in cur.model_fields:
            return None
        ann = cur.model_fields[part].annotation
        for arg in (ann, *get_args(ann)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                cur = arg
                break
            inner = get_args(arg)
            sub = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if sub is not None:
                cur = sub
                break
        else:
            return None
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _describe(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    typ = err.get("type", "")
    ctx = err.get("ctx") or {}
    got = err.get("input")
    loc = tuple(err.get("loc", ()))
    if typ == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(allowed)}; got {got!r}"
    if typ == "extra_forbidden":
        parent = _submodel(model, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see docs/service.md"
        return f"unknown field; allowed: {allowed}"
    if typ == "missing":
        return "required"
    if typ in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{err['msg'].replace('Input should be', 'must be')}; got {got!r}"
    if typ == "string_pattern_mismatch":
        return f"{got!r} does not match {ctx.get('pattern')}"
    msg = str(err.get("msg", "invalid"))
    msg = msg.replace("Value error, ", "").replace("Input should be", "must be")
    return f"{msg}; got {got!r}" if got is not None and not isinstance(got, Mapping) else msg


def format_validation_error(exc: ValidationError, model: type[BaseModel], *, prefix: str) -> str:
    """One line per problem: ``stream 'lobby': effect.kind: must be one of pixelate, fill, ...``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        # drop pydantic's union/function tags (e.g. 'function-before[...]')
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function"))))
        where = _loc_text(loc)
        lines.append(f"{prefix}: {where + ': ' if where else ''}{_describe(err, model)}")
    return "; ".join(lines)


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out
