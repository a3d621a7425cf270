"""udp:// sources get a receive buffer sized on purpose, as a setting (issue 12, defect 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy_filter.config import load_service
from privacy_filter.errors import ConfigError
from privacy_filter.io.av_source import TS_PACKET_BYTES, ReconnectPolicy, open_arguments


def test_default_udp_fifo_is_a_few_seconds_at_a_high_bitrate() -> None:
    _, kw = open_arguments("udp://127.0.0.1:1234", ReconnectPolicy())
    packets = int(kw["options"]["fifo_size"])
    assert packets == int(2.0 * 8_000_000 / (8 * TS_PACKET_BYTES)) == 10_638
    # 2 MB, not FFmpeg examples' 188 MB: small enough that a low-bitrate camera writes through the
    # whole ring (its pages become resident) within the first minute, so RSS then stays flat
    assert packets * TS_PACKET_BYTES < 2_100_000
    assert kw["options"]["overrun_nonfatal"] == "1"


def test_udp_buffer_is_a_source_setting(tmp_path: Path) -> None:
    svc = tmp_path / "svc.yaml"
    svc.write_text("streams:\n  cam: {source: {url: 'udp://0.0.0.0:1234', udp_buffer_s: 1.0, udp_max_bitrate: 8M}, output: a.mkv}\n")
    src = load_service(svc).streams[0].source
    policy = ReconnectPolicy(udp_buffer_s=src.udp_buffer_s, udp_max_bitrate_bps=src.udp_bitrate_bps())
    assert open_arguments(src.url, policy)[1]["options"]["fifo_size"] == str(8_000_000 // (8 * TS_PACKET_BYTES))
    svc.write_text("streams:\n  cam: {source: {url: 'udp://0.0.0.0:1234', udp_max_bitrate: fast}, output: a.mkv}\n")
    with pytest.raises(ConfigError, match="udp_max_bitrate"):
        load_service(svc)
