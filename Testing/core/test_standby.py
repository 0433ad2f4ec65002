"""x2ct.standby: a spare process that imports ahead, then runs exactly one command, or none."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest

from x2ct import jobs, standby


def test_it_runs_the_one_command_it_is_handed(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO('["catalog", "list"]\n["info"]\n'))
    assert standby.main(["--idle", "60"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[0]) == standby.READY
    assert any("x2ct-cnn-2v" in line for line in out[1:])
    assert sys.stdin.readline() == '["info"]\n', "one command, not two"


def test_a_line_that_is_not_a_command_is_refused_and_an_empty_stdin_runs_nothing(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"command": "info"}\n'))
    assert standby.main(["--idle", "60"]) == 2
    assert "expected a JSON list of strings" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert standby.main(["--idle", "60"]) == 0
    with pytest.raises(ValueError):
        standby.command_from('["info", 3]')


def test_it_ends_by_itself_when_nobody_hands_it_a_command():
    began = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "x2ct.standby", "--idle", "0.5"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, env=jobs.child_environment())
    try:
        assert child.wait(timeout=120) == standby.EXIT_IDLE  # stdin stays open: only the idle time ends it
    finally:
        child.stdin.close()
        child.kill()
    assert time.monotonic() - began < 60
