"""Encoder presets and tunes are validated against the chosen encoder (issue 11, "Encoder settings per codec").

libx264: presets ultrafast..placebo and its tunes; h264_nvenc: p1..p7 plus its named presets
and tunes hq/ll/ull/lossless.  Defaults are codec-aware, and when an encoder fails to open the
message carries FFmpeg's own error instead of guessing.  No NVENC hardware here: opening
h264_nvenc fails, which is exactly what the error-reporting test needs.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from privacy_filter.config import stream_config
from privacy_filter.errors import ConfigError, UserError
from privacy_filter.io.av_sink import Encoder, EncodeSettings, SinkError, codec_available
from privacy_filter.media import VideoInfo

VI = VideoInfo(64, 48, Fraction(1, 25), Fraction(25), None, None, "raw", "yuv420p")


def _cfg(**output: object):  # noqa: ANN202
    return stream_config("in.mp4", "out.mkv", overrides={"output": output})


def test_nvenc_with_the_x264_preset_veryfast_is_a_config_error_naming_the_allowed_presets() -> None:
    with pytest.raises(ConfigError) as ei:
        _cfg(codec="h264_nvenc", preset="veryfast")
    msg = str(ei.value)
    assert "output" in msg and "veryfast" in msg and "h264_nvenc" in msg
    assert all(p in msg for p in ("p1", "p7", "hq", "ll")), msg


def test_tunes_are_checked_per_codec_and_defaults_are_codec_aware() -> None:
    with pytest.raises(ConfigError, match="hq, ll, ull, lossless"):
        _cfg(codec="h264_nvenc", tune="zerolatency")
    with pytest.raises(ConfigError, match="zerolatency"):
        _cfg(codec="libx264", tune="ull")
    with pytest.raises(ConfigError, match="ultrafast"):
        _cfg(codec="libx264", preset="p4")
    assert _cfg(codec="h264_nvenc", preset="p7", tune="ull").output.preset == "p7"
    assert _cfg(codec="libx264", preset="placebo", tune="zerolatency").output.tune == "zerolatency"
    # unset: the encoder's default for the chosen codec, not libx264's for every codec
    assert EncodeSettings.from_config(_cfg(codec="h264_nvenc").output).effective_preset() == "p4"
    assert EncodeSettings.from_config(_cfg().output).effective_preset() == "veryfast"


def test_encoder_refuses_a_preset_of_another_codec_without_blaming_the_driver(tmp_path: Path) -> None:
    if not codec_available("h264_nvenc"):
        pytest.skip("this FFmpeg has no h264_nvenc")
    with pytest.raises(UserError) as ei:
        Encoder(str(tmp_path / "o.mkv"), VI, EncodeSettings(codec="h264_nvenc", preset="veryfast"))
    msg = str(ei.value)
    assert "p1" in msg and "driver" not in msg, msg


def test_an_encoder_that_cannot_open_reports_ffmpegs_own_error(tmp_path: Path) -> None:
    if not codec_available("h264_nvenc"):
        pytest.skip("this FFmpeg has no h264_nvenc")
    try:
        enc = Encoder(str(tmp_path / "o.mkv"), VI, EncodeSettings(codec="h264_nvenc", preset="p4"))
    except SinkError as exc:
        msg = str(exc)
    else:  # an NVENC-capable host
        enc.close()
        pytest.skip("h264_nvenc opens here")
    # e.g. "Cannot load libcuda.so.1" / "OpenEncodeSessionEx failed": what FFmpeg logged, verbatim
    assert "FFmpeg:" in msg and ("libcuda" in msg or "nvenc" in msg.lower().split("ffmpeg:", 1)[1]), msg


def test_dockerfile_exposes_the_driver_video_libraries(repo_root: Path) -> None:
    text = (repo_root / "Dockerfile").read_text()
    caps = [line for line in text.splitlines() if "NVIDIA_DRIVER_CAPABILITIES" in line and not line.lstrip().startswith("#")]
    assert caps and all("video" in line for line in caps), caps


def test_low_memory_merges_x264s_sync_lookahead_into_the_given_parameters() -> None:
    from privacy_filter.io.av_sink import encoder_options

    assert encoder_options(EncodeSettings()) == {}
    assert encoder_options(EncodeSettings(low_memory=True)) == {"x264-params": "sync-lookahead=0"}
    given = EncodeSettings(low_memory=True, options={"x264-params": "aq-mode=2", "profile": "high"})
    assert encoder_options(given) == {"x264-params": "aq-mode=2:sync-lookahead=0", "profile": "high"}
    own = EncodeSettings(low_memory=True, options={"x264-params": "sync-lookahead=4"})
    assert encoder_options(own) == {"x264-params": "sync-lookahead=4"}  # the user's own value wins
    assert encoder_options(EncodeSettings(codec="h264_nvenc", low_memory=True)) == {}
    assert stream_config("in.mp4", "out.mp4", preset="cctv").output.low_memory is True
    assert stream_config("in.mp4", "out.mp4", preset="video-call").output.low_memory is False


def _encode_packets(clip: Path, out: Path, settings: EncodeSettings) -> list[bytes]:
    """Encode every frame of ``clip`` with ``settings``; the output's video packets."""
    import av

    from privacy_filter.io import open_source

    src = open_source(str(clip), stream_id="t", audio=False, live=False)
    info = src.open()
    enc = Encoder(str(out), info.video, settings)
    n = 0
    for frame in src:
        enc.write(frame)
        n += 1
    enc.close()
    src.close()
    with av.open(str(out)) as c:
        packets = [bytes(p) for p in c.demux(video=0) if p.size]
    assert n == 71 and len(packets) == 71
    return packets


def test_x264s_lookahead_in_the_encoding_thread_writes_the_same_bitstream(shared_data: Path, tmp_path: Path) -> None:
    """sync-lookahead=0 (part of low_memory) with the same frame threads writes the very same packets:
    it changes memory and pace, never the video.  Threads are pinned so the check holds on any CPU count."""
    clip = shared_data / "cctv" / "tud_campus" / "video.mp4"
    plain = _encode_packets(clip, tmp_path / "plain.mp4", EncodeSettings(threads=3, audio="drop"))
    low = _encode_packets(clip, tmp_path / "low.mp4", EncodeSettings(threads=3, low_memory=True, audio="drop"))
    assert plain == low


def test_low_memory_encodes_on_one_x264_thread(shared_data: Path, tmp_path: Path) -> None:
    """low_memory = one x264 thread (each frame thread holds its own pictures): its packets are those
    of an explicit one-thread encode and differ from the default threaded encode; an explicit
    ``threads`` still wins."""
    from privacy_filter.io.av_sink import encoder_threads

    clip = shared_data / "cctv" / "tud_campus" / "video.mp4"
    low = _encode_packets(clip, tmp_path / "low.mp4", EncodeSettings(low_memory=True, audio="drop"))
    one = _encode_packets(clip, tmp_path / "one.mp4", EncodeSettings(threads=1, audio="drop"))
    threaded = _encode_packets(clip, tmp_path / "threaded.mp4", EncodeSettings(threads=3, audio="drop"))
    assert low == one
    assert low != threaded
    assert encoder_threads(EncodeSettings(low_memory=True)) == 1
    assert encoder_threads(EncodeSettings(low_memory=True, threads=4)) == 4
    assert encoder_threads(EncodeSettings()) == 0  # FFmpeg's own choice
    assert encoder_threads(EncodeSettings(codec="h264_nvenc", low_memory=True)) == 0
