"""Stream/service configuration: YAML layers, presets, env and CLI overrides, error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy_filter.config import PRESETS, ServiceConfig, StreamConfig, load_preset, load_service, stream_config
from privacy_filter.errors import ConfigError

BASE = """
defaults:
  model: selfie
  mask: {threshold: 0.4}
  output: {codec: libx264, preset: ultrafast, audio: drop}
streams:
  - id: lobby
    source: a.mp4
    output: lobby.mkv
    effect: {kind: fill, color: [255, 0, 0]}
  - id: Desk
    source: {url: b.mp4, audio: false}
    output: {url: desk.mp4, audio: copy, gop: 25}
    mask: {threshold: 0.7}
"""


def _write(tmp_path: Path, text: str, name: str = "svc.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("PRIVACY_FILTER_") and k != "PRIVACY_FILTER_SHARED":
            monkeypatch.delenv(k)


def test_defaults_merge_into_each_stream(tmp_path: Path) -> None:
    cfg = load_service(_write(tmp_path, BASE))
    lobby, desk = cfg.streams
    assert lobby.id == "lobby" and lobby.source.url == "a.mp4" and lobby.output.url == "lobby.mkv"
    assert lobby.mask.threshold == 0.4 and desk.mask.threshold == 0.7  # the stream's own value wins
    assert lobby.output.preset == "ultrafast" and lobby.output.audio == "drop"  # merged under the url shorthand
    assert desk.output.audio == "copy" and desk.output.gop == 25 and desk.output.preset == "ultrafast"
    assert lobby.effect.kind == "fill" and lobby.effect.color == (255, 0, 0)
    assert desk.source.audio is False
    assert lobby.on_failure == "cover"  # fail closed unless a stream says otherwise
    assert isinstance(cfg, ServiceConfig) and cfg.zmq.transport == "ipc"


def test_streams_as_mapping(tmp_path: Path) -> None:
    cfg = load_service(_write(tmp_path, "streams:\n  cam1: {source: a.mp4, output: o.mkv}\n  cam2: {source: rtsp://h/s, output: p.mkv}\n"))
    assert [s.id for s in cfg.streams] == ["cam1", "cam2"]
    assert [s.is_live() for s in cfg.streams] == [False, True]


def test_env_overrides_defaults_and_one_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACY_FILTER_DEFAULTS__EFFECT__KIND", "pixelate")
    monkeypatch.setenv("PRIVACY_FILTER_DEFAULTS__MASK__DILATE_PX", "7")
    monkeypatch.setenv("PRIVACY_FILTER_STREAMS__DESK__ON_FAILURE", "drop")  # ids match case-insensitively
    monkeypatch.setenv("PRIVACY_FILTER_STREAMS__LOBBY__EFFECT__COLOR", "[0, 0, 255]")  # JSON values
    monkeypatch.setenv("PRIVACY_FILTER_METRICS__PORT", "9109")
    monkeypatch.setenv("PRIVACY_FILTER_ZMQ__TRANSPORT", "tcp")
    monkeypatch.setenv("PRIVACY_FILTER_ZMQ__CURVE", "off")  # tcp needs CURVE keys unless explicitly off
    cfg = load_service(_write(tmp_path, BASE))
    lobby, desk = cfg.streams
    assert lobby.effect.kind == "pixelate" and desk.effect.kind == "pixelate"  # env beats the file
    assert lobby.mask.dilate_px == 7 and desk.mask.dilate_px == 7
    assert desk.on_failure == "drop" and lobby.on_failure == "cover"
    assert lobby.effect.color == (0, 0, 255)
    assert cfg.metrics.port == 9109 and cfg.zmq.transport == "tcp"


def test_cli_beats_env_beats_file_beats_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "defaults:\n  effect: {kind: blur, block_px: 10}\n  mask: {hold_frames: 3}\nstreams: []\n")
    # file over preset: cctv says pixelate, temporal none
    sc = stream_config("in.mp4", "out.mp4", preset="cctv", config_path=path)
    assert (sc.effect.kind, sc.mask.hold_frames, sc.mask.temporal, sc.output.audio) == ("blur", 3, "none", "drop")
    # env over file
    monkeypatch.setenv("PRIVACY_FILTER_DEFAULTS__EFFECT__KIND", "fill")
    assert stream_config("in.mp4", "out.mp4", preset="cctv", config_path=path).effect.kind == "fill"
    # CLI over env
    sc = stream_config("in.mp4", "out.mp4", preset="cctv", config_path=path, overrides={"effect": {"kind": "overlay"}, "device": "cpu"})
    assert sc.effect.kind == "overlay" and sc.effect.block_px == 10
    # the same precedence in service mode
    svc = _write(tmp_path, "streams:\n  - {id: s, source: a.mp4, output: o.mkv, effect: {kind: blur}}\n", "s2.yaml")
    assert load_service(svc, cli={"effect": {"kind": "none"}}).streams[0].effect.kind == "none"


def test_presets_load_and_say_what_they_promise(tmp_path: Path) -> None:
    assert set(PRESETS) == {"cctv", "video-call"}
    cctv = StreamConfig.model_validate({"id": "x", "source": "a.mp4", **load_preset("cctv")})
    assert cctv.effect.kind in ("pixelate", "fill") and cctv.effect.target == "person"
    # people are found by the detector and the motion layer, which pad, dilate and hold their own cover
    assert cctv.uses_cover_engine() and cctv.detector.name == "nanodet" and cctv.motion.enabled and cctv.cover == "box"
    assert cctv.detector.every == 1 and cctv.detector.hold_missed > 0 and cctv.motion.hold_frames > 0
    assert cctv.output.audio == "drop" and cctv.on_failure == "cover"
    assert cctv.effect.block_size(1080) >= 32  # coarse
    vc = StreamConfig.model_validate({"id": "x", "source": "a.mp4", **load_preset("video-call")})
    assert (vc.effect.kind, vc.effect.target, vc.mask.temporal, vc.output.audio) == ("blur", "background", "smooth", "copy")
    assert vc.mask.feather_px > 0 and not vc.uses_cover_engine()
    # a stream's preset beats the default preset; the stream's own fields beat its preset
    cfg = load_service(
        _write(
            tmp_path,
            "defaults: {preset: cctv}\nstreams:\n  - {id: a, source: a.mp4, output: a.mkv}\n  - {id: b, source: b.mp4, output: b.mkv, preset: video-call, mask: {feather_px: 1}}\n",
        )
    )
    a, b = cfg.streams
    assert (a.preset, a.effect.kind, b.preset, b.effect.kind, b.mask.feather_px) == ("cctv", "pixelate", "video-call", "blur", 1)


def test_shipped_example_service_config_is_valid(repo_root: Path) -> None:
    cfg = load_service(repo_root / "configs/example-service.yaml")
    ids = [s.id for s in cfg.streams]
    assert ids == ["lobby", "entrance", "meeting-room"]
    assert cfg.streams[1].is_live() and not cfg.streams[0].is_live()
    assert cfg.streams[0].effect.kind == "fill" and cfg.streams[0].output.audio == "drop"


def test_shipped_cctv_fast_config_is_the_preset_with_a_lower_detector_rate(repo_root: Path) -> None:
    fast = stream_config("in.mp4", "out.mp4", config_path=str(repo_root / "configs/cctv-fast.yaml"))
    cctv = stream_config("in.mp4", "out.mp4", preset="cctv")
    assert (fast.detector.rate, cctv.detector.rate) == (5.0, 12.5)
    assert fast.model_dump(exclude={"detector"}) == cctv.model_dump(exclude={"detector"})
    assert fast.detector.model_dump(exclude={"rate"}) == cctv.detector.model_dump(exclude={"rate"})
    assert [fast.detector.every_at(fps) for fps in (7.0, 10.0, 25.0)] == [1, 2, 5]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("effect: {kind: pixelat}", "stream 'lobby': effect.kind: must be one of pixelate, fill, blur, replace, overlay, none; got 'pixelat'"),
        ("mask: {threshold: 2}", "stream 'lobby': mask.threshold: must be less than or equal to 1; got 2"),
        ("mask: {colour: 1}", "stream 'lobby': mask.colour: unknown field; allowed: threshold, dilate_px"),
        ("on_failure: ignore", "stream 'lobby': on_failure: must be one of cover, drop, pass; got 'ignore'"),
        ("output: {url: o.mkv, codec: h265}", "stream 'lobby': output.codec: must be one of libx264, h264_nvenc; got 'h265'"),
        ("output: {url: o.mkv, bitrate: fast}", "stream 'lobby': output.bitrate: 'fast' does not match"),
        ("effect: {block_px: 7}", "stream 'lobby': effect: block_px must be even"),
        ("tiles: 3by2", "stream 'lobby': tiles: '3by2' does not match"),
        ("policy: sometimes", "stream 'lobby': policy: must be one of live, file, auto"),
        ("preset: night", "stream 'lobby': preset: must be one of cctv, video-call, got 'night'"),
    ],
)
def test_errors_name_the_stream_the_field_and_what_is_allowed(tmp_path: Path, body: str, expected: str) -> None:
    text = "streams:\n  - id: lobby\n    source: a.mp4\n    output: o.mkv\n    " + body + "\n"
    with pytest.raises(ConfigError) as ei:
        load_service(_write(tmp_path, text))
    assert expected in str(ei.value)
    assert "\n" not in str(ei.value)  # one line for the CLI


@pytest.mark.parametrize(
    "text, expected",
    [
        ("streams:\n  - {id: a, source: x.mp4, output: o.mkv}\n  - {id: a, source: y.mp4, output: p.mkv}\n", "stream id 'a' is used twice"),
        ("streams:\n  - {source: x.mp4, output: o.mkv}\n", "streams[0]: id: required"),
        ("streams:\n  - {id: a, output: o.mkv}\n", "stream 'a': source: required"),
        ("streams:\n  - {id: a, source: x.mp4}\n", "stream 'a': output.url: required in service mode"),
        ("streams:\n  - {id: 'bad id', source: x.mp4, output: o.mkv}\n", "stream 'bad id': id: 'bad id' does not match"),
        ("defaults: {}\n", "no 'streams:' section"),
        ("stream:\n  - {id: a}\n", "unknown top-level key 'stream'; allowed: defaults, metrics, stage, streams, supervisor, zmq"),
        ("streams: [\n", "invalid YAML"),
        ("streams:\n  - {id: a, source: x.mp4, output: o.mkv}\nmetrics: {port: 99999}\n", "metrics.port: must be less than or equal to 65535"),
        (
            "streams:\n  - {id: a, source: x.mp4, output: o.mkv, effect: {kind: blur}}\n  - {id: b, source: y.mp4, output: p.mkv, mask: {temporal: forever}}\n",
            "stream 'b': mask.temporal: must be one of none, hold, smooth",
        ),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_service(_write(tmp_path, text))
    assert expected in str(ei.value)


def test_all_stream_errors_reported_together(tmp_path: Path) -> None:
    text = "streams:\n  - {id: a, source: x.mp4, output: o.mkv, on_failure: open}\n  - {id: b, source: y.mp4, output: p.mkv, device: tpu}\n"
    with pytest.raises(ConfigError) as ei:
        load_service(_write(tmp_path, text))
    assert "stream 'a': on_failure" in str(ei.value) and "stream 'b': device: must be one of cpu, cuda, auto" in str(ei.value)


def test_env_error_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACY_FILTER_DEFAULTS__EFFECT__KIND", "sparkle")
    with pytest.raises(ConfigError, match="stream 'lobby': effect.kind: must be one of .*got 'sparkle'"):
        load_service(_write(tmp_path, BASE))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_service(tmp_path / "nope.yaml")


def test_pass_must_be_explicit(tmp_path: Path) -> None:
    for preset in PRESETS:
        assert load_preset(preset).get("on_failure", "cover") != "pass"
    cfg = load_service(_write(tmp_path, "streams:\n  - {id: a, source: x.mp4, output: o.mkv}\n  - {id: b, source: y.mp4, output: p.mkv, on_failure: pass}\n"))
    assert [s.on_failure for s in cfg.streams] == ["cover", "pass"]


def test_output_helpers() -> None:
    sc = StreamConfig.model_validate({"id": "a", "source": "rtsp://cam/1", "output": {"url": "o.ts", "bitrate": "2.5M"}, "policy": "file"})
    assert sc.output.bitrate_bps() == 2_500_000
    assert sc.is_live() is False  # an explicit policy beats the url


def test_on_failure_pass_only_when_explicit_on_that_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DESIGN §5.1: publishing unfiltered frames is chosen per stream, never inherited from defaults."""
    streams = "streams:\n  - {id: lobby, source: a.mp4, output: l.mkv}\n  - {id: desk, source: b.mp4, output: d.mkv, on_failure: pass}\n"
    with pytest.raises(ConfigError, match=r"stream 'lobby': on_failure: pass .* from defaults:.*streams: lobby: on_failure: pass"):
        load_service(_write(tmp_path, "defaults: {on_failure: pass}\n" + streams))
    ok = load_service(_write(tmp_path, streams, "ok.yaml"))  # the stream's own field
    assert [s.on_failure for s in ok.streams] == ["cover", "pass"]
    monkeypatch.setenv("PRIVACY_FILTER_STREAMS__LOBBY__ON_FAILURE", "pass")  # that stream's env variable
    assert load_service(_write(tmp_path, streams, "ok.yaml")).streams[0].on_failure == "pass"
    monkeypatch.delenv("PRIVACY_FILTER_STREAMS__LOBBY__ON_FAILURE")
    monkeypatch.setenv("PRIVACY_FILTER_DEFAULTS__ON_FAILURE", "pass")
    with pytest.raises(ConfigError, match="stream 'lobby': on_failure: pass .* from PRIVACY_FILTER_DEFAULTS__ON_FAILURE"):
        load_service(_write(tmp_path, streams, "ok.yaml"))
    with pytest.raises(ConfigError, match="PRIVACY_FILTER_DEFAULTS__ON_FAILURE"):
        stream_config("in.mp4", "out.mp4")
    monkeypatch.delenv("PRIVACY_FILTER_DEFAULTS__ON_FAILURE")
    # process --config FILE: the file's defaults: are the one stream's own config
    one = _write(tmp_path, "defaults: {on_failure: pass}\n", "one.yaml")
    assert stream_config("in.mp4", "out.mp4", config_path=one).on_failure == "pass"


@pytest.mark.parametrize(
    ("zone", "expect"),
    [
        ({"mode": "privacy", "points": [[0, 0], [1, 0]]}, "stream 'main': zones[0]: points: a zone needs at least 3 points, got 2"),
        ({"mode": "exclude", "points": [[0, 0], [1, 0], [1, 1.5]]}, "stream 'main': zones[0]: points[2]: coordinates must be in [0, 1]"),
        ({"mode": "privacy", "points": [[-0.1, 0], [1, 0], [1, 1]]}, "stream 'main': zones[0]: points[0]: coordinates must be in [0, 1]"),
        ({"mode": "blur", "points": [[0, 0], [1, 0], [1, 1]]}, "stream 'main': zones[0].mode: must be one of privacy, exclude; got 'blur'"),
        ({"points": [[0, 0], [1, 0], [1, 1]]}, "stream 'main': zones[0].mode: required"),
    ],
)
def test_bad_zones_are_config_errors_naming_stream_and_field(zone: dict, expect: str) -> None:  # type: ignore[type-arg]
    from privacy_filter.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        stream_config("in.mp4", "out.mp4", preset="cctv", overrides={"zones": [{"mode": "privacy", "points": [[0, 0], [1, 0], [0, 1]]}, zone][1:]})
    assert expect in str(exc.value)


def test_zones_in_a_service_file_name_the_stream(tmp_path: Path) -> None:
    from privacy_filter.errors import ConfigError

    path = _write(tmp_path, "streams:\n  - {id: gate, source: a.mp4, output: o.mkv, zones: [{mode: privacy, points: [[0, 0], [2, 0], [0, 1]]}]}\n")
    with pytest.raises(ConfigError, match=r"stream 'gate': zones\[0\]: points\[1\]"):
        load_service(path)


def test_cctv_keys_parse() -> None:
    sc = stream_config(
        "in.mp4",
        "out.mp4",
        preset="cctv",
        overrides={"detector": {"score": 0.3, "every": 2}, "motion": {"learn_s": 10}, "cover": "segment", "zones": [{"mode": "exclude", "points": [[0, 0], [0.5, 0], [0.5, 0.5]]}]},
    )
    assert (sc.detector.score, sc.detector.every, sc.motion.learn_s, sc.cover) == (0.3, 2, 10.0, "segment")
    assert sc.zones[0].mode == "exclude" and sc.zones[0].points[1] == (0.5, 0.0)
