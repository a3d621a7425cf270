"""Metrics are not exposed beyond this host by default (issue 12, defect 13)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from privacy_filter.config import load_service
from privacy_filter.metrics import Board


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _non_loopback_address() -> str | None:
    """An address of this host other than 127.x (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent, the kernel only picks a route
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_service_metrics_listen_on_loopback_by_default(tmp_path: Path) -> None:
    svc = tmp_path / "svc.yaml"
    port = _free_port()
    svc.write_text(f"streams:\n  cam: {{source: a.mp4, output: a.mkv}}\nmetrics: {{port: {port}}}\n")
    cfg = load_service(svc)
    assert cfg.metrics.addr == "127.0.0.1"
    board = Board(["cam"])
    server, thread = board.serve(cfg.metrics.port, cfg.metrics.addr)
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"privacy_filter_frames_in_total" in r.read()
        other = _non_loopback_address()
        if other is None:
            pytest.skip("this host has no non-loopback address to try")
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((other, port)) != 0, f"metrics reachable on {other}:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_addr_can_open_it_up(tmp_path: Path) -> None:
    svc = tmp_path / "svc.yaml"
    svc.write_text("streams:\n  cam: {source: a.mp4, output: a.mkv}\nmetrics: {port: 9100, addr: 0.0.0.0}\n")
    assert load_service(svc).metrics.addr == "0.0.0.0"
