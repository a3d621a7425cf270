"""What ``privacy-filter process --help`` tells a new user (issue 12's rough edges)."""

from __future__ import annotations

import pytest

from privacy_filter.cli import main


def test_process_help_lists_every_source_kind_and_explains_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["process", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for form in ("zmq+pull://", "zmq+sub://", "zmq+push://", "zmq+pub://", "imagezmq+rep://", "imagezmq+sub://", "netgear+sub://", "netgear+rep://", "rtsp://", "lavfi:"):
        assert form in text, form
    for flag, words in (("--preset", "audio dropped"), ("--target", "what the effect covers"), ("--effect", "how it is covered")):
        assert flag in text and words in text, flag
