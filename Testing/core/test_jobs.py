"""x2ct.jobs: background x2ct commands with JSON-lines events, readable errors and tree-wide cancel."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from x2ct import jobs
from x2ct.errors import X2CTError

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="the stand-in interpreter is a shell script")


def _stand_in(tmp_path: Path, body: str) -> str:
    """A shell script used as the job's 'python': it receives `-m x2ct ARGS` and runs `body` instead."""
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@posix_only
def test_events_parsed_and_text_lines_kept(tmp_path):
    python = _stand_in(tmp_path, 'echo "$1 $2 $3"\n'
                                 'echo \'{"event": "step", "step": 1, "total": 2, "loss": 0.5}\'\n'
                                 'echo \'[1, 2]\'\n'
                                 'echo \'{"event": "done", "steps": 2}\'\n')
    job = jobs.Job(["train", "--progress", "json"], python=python)
    seen = []
    assert job.wait(timeout=10, on_event=seen.append) == 0
    assert seen == [{"event": "text", "text": "-m x2ct train"},
                    {"event": "step", "step": 1, "total": 2, "loss": 0.5},
                    {"event": "text", "text": "[1, 2]"},
                    {"event": "done", "steps": 2}]
    assert not job.running and job.returncode == 0 and job.error is None
    assert job.poll() == []  # wait consumed them


@posix_only
def test_poll_returns_only_new_events_and_child_gets_source_on_pythonpath(tmp_path):
    python = _stand_in(tmp_path, 'echo "{\\"event\\": \\"env\\", \\"path\\": \\"$PYTHONPATH\\", '
                                 '\\"extra\\": \\"$X2CT_TEST\\"}"\nsleep 0.3\necho last\n')
    job = jobs.Job(["info"], env={"X2CT_TEST": "yes"}, python=python)
    deadline = time.monotonic() + 10
    events = []
    while job.running and time.monotonic() < deadline:
        events += job.poll()
        time.sleep(0.02)
    events += job.poll()
    assert job.poll() == []
    assert events[0]["event"] == "env" and events[0]["extra"] == "yes"
    assert events[0]["path"].split(os.pathsep)[0] == str(jobs.SOURCE_ROOT)
    assert (jobs.SOURCE_ROOT / "x2ct" / "jobs.py").is_file()
    assert events[-1] == {"event": "text", "text": "last"} and len(events) == 2


def test_cli_error_line_captured():
    job = jobs.Job(["reconstruct", "--view", "/no/such/xray.dcm", "--model", "back-projection",
                    "--out", "/no/such/ct.nii.gz"])
    assert job.wait(timeout=60) == 2
    assert job.returncode == 2
    assert job.error.startswith("x2ct reconstruct: error:") and "/no/such/xray.dcm" in job.error


@posix_only
def test_error_falls_back_to_last_stderr_line_or_exit_code(tmp_path):
    job = jobs.Job([], python=_stand_in(tmp_path, 'echo "Traceback" >&2\necho "RuntimeError: boom" >&2\n'
                                                  'echo "" >&2\nexit 3\n'))
    assert job.wait(timeout=10) == 3 and job.error == "RuntimeError: boom"
    silent = jobs.Job([], python=_stand_in(tmp_path, "exit 4\n"))
    assert silent.wait(timeout=10) == 4 and silent.error == "exited with code 4"


@posix_only
def test_cancel_kills_the_whole_tree(tmp_path):
    # The child starts a grandchild that ignores SIGTERM, reports both pids, then waits.
    python = _stand_in(tmp_path, "trap '' TERM\n(trap '' TERM; exec sleep 300) &\n"
                                 'echo "{\\"event\\": \\"pids\\", \\"child\\": $$, \\"grandchild\\": $!}"\n'
                                 "wait\n")
    job = jobs.Job(["train"], python=python)
    deadline = time.monotonic() + 10
    pids = None
    while pids is None and time.monotonic() < deadline:
        pids = next((e for e in job.poll() if e.get("event") == "pids"), None)
        time.sleep(0.02)
    assert pids is not None and _alive(pids["child"]) and _alive(pids["grandchild"])
    began = time.monotonic()
    job.cancel(timeout=0.5)
    assert time.monotonic() - began < 5
    assert not job.running and job.cancelled
    assert job.returncode == -9  # SIGTERM was ignored, so SIGKILL ended it
    assert job.error == "cancelled"
    time.sleep(0.1)
    assert not _alive(pids["child"]) and not _alive(pids["grandchild"])


@posix_only
def test_cancel_of_a_polite_child_is_quick_and_wait_times_out(tmp_path):
    job = jobs.Job([], python=_stand_in(tmp_path, "exec sleep 300\n"))
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.3)
    assert job.running and job.returncode is None and job.error is None
    began = time.monotonic()
    job.cancel()
    assert time.monotonic() - began < 2  # SIGTERM sufficed, no 5 s grace wait
    assert job.returncode == -15 and job.error == "cancelled"
    job.cancel()  # a second cancel is harmless


def test_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(X2CTError, match="Cannot start .*no-python"):
        jobs.Job(["info"], python=str(tmp_path / "no-python"))


def test_default_python_outside_and_inside_slicer(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "slicer", raising=False)
    assert jobs.default_python() == sys.executable
    launcher = tmp_path / "bin" / ("PythonSlicer.exe" if sys.platform == "win32" else "PythonSlicer")
    launcher.parent.mkdir()
    launcher.write_text("")

    class App:
        def applicationDirPath(self):
            return str(launcher.parent)

    monkeypatch.setitem(sys.modules, "slicer", type(sys)("slicer"))
    sys.modules["slicer"].app = App()
    assert jobs.default_python() == str(launcher)


def test_pause_lets_slicer_process_events_only_inside_slicer(monkeypatch):
    monkeypatch.delitem(sys.modules, "slicer", raising=False)
    jobs.pause(0.0)  # outside Slicer: a plain sleep

    class App:
        calls = 0

        def processEvents(self):
            App.calls += 1

    monkeypatch.setitem(sys.modules, "slicer", type(sys)("slicer"))
    sys.modules["slicer"].app = App()
    jobs.pause(0.0)
    jobs.pause(0.0)
    assert App.calls == 2


@posix_only
def test_a_cancel_without_waiting_returns_at_once_and_the_poll_kills_the_tree(tmp_path):
    """What the panels' Cancel does: SIGTERM now, the SIGKILL from a later poll (the panel's timer)."""
    python = _stand_in(tmp_path, "trap '' TERM\n(trap '' TERM; exec sleep 300) &\n"
                                 'echo "{\\"event\\": \\"pids\\", \\"child\\": $$, \\"grandchild\\": $!}"\n'
                                 "wait\n")
    job = jobs.Job(["train"], python=python)
    deadline = time.monotonic() + 10
    pids = None
    while pids is None and time.monotonic() < deadline:
        pids = next((e for e in job.poll() if e.get("event") == "pids"), None)
        time.sleep(0.02)
    began = time.monotonic()
    job.cancel(timeout=0.5, wait=False)
    assert time.monotonic() - began < 0.2 and job.cancelled
    assert job.running and _alive(pids["child"]), "SIGTERM is ignored: only the later poll's kill ends it"
    while job.running and time.monotonic() - began < 10:
        job.poll()
        time.sleep(0.05)
    assert not job.running and job.returncode == -9 and job.error == "cancelled"
    time.sleep(0.1)
    assert not _alive(pids["child"]) and not _alive(pids["grandchild"])


class _StartupInfo:
    """``subprocess.STARTUPINFO`` as on Windows (absent elsewhere)."""

    def __init__(self):
        self.dwFlags, self.wShowWindow = 0, 1


def test_background_processes_get_a_hidden_console_on_windows_and_a_session_elsewhere(monkeypatch, tmp_path):
    """As ``slicer.util.launchConsoleProcess`` does (Slicer@v5.10.0 Base/Python/slicer/util.py:3911-3916), plus
    a process group so that a cancel reaches the whole tree."""
    assert jobs.process_options() == ({"start_new_session": True} if os.name != "nt" else jobs.process_options())
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setattr(jobs.subprocess, "STARTUPINFO", _StartupInfo, raising=False)
    monkeypatch.setattr(jobs.subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200, raising=False)
    options = jobs.process_options()
    assert options["creationflags"] == 0x200 and "start_new_session" not in options
    assert options["startupinfo"].dwFlags & 1 and options["startupinfo"].wShowWindow == 0  # SW_HIDE
    helper = jobs.process_options(new_group=False)  # pip, taskkill: hidden too, in the caller's group
    assert set(helper) == {"startupinfo"} and helper["startupinfo"].wShowWindow == 0

    started = []

    class Popen:
        def __init__(self, args, **kwargs):
            started.append(kwargs)
            raise OSError(2, "stand-in")

    monkeypatch.setattr(jobs.subprocess, "Popen", Popen)
    with pytest.raises(X2CTError):
        jobs.Job(["info"], python="python")
    assert started[0]["creationflags"] == 0x200 and started[0]["startupinfo"].wShowWindow == 0
    monkeypatch.setattr(os, "name", "posix")
    assert jobs.process_options() == {"start_new_session": True} and jobs.process_options(new_group=False) == {}


# --- spares (x2ct.standby): the imports done ahead, one command each ---------------------------------------------

#: A stand-in for ``python -m x2ct.standby``: says it is ready, then echoes the one line it is handed.
_SPARE_BODY = ('echo \'{"event": "standby-ready"}\'\n'
               'read line || exit 0\n'
               'echo "{\\"event\\": \\"got\\", \\"module\\": \\"$2\\", \\"command\\": $line}"\n')


@pytest.fixture
def no_spare_left():
    yield
    jobs.drop_spare()


def _wait_until_ended(job, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while job.running and time.monotonic() < deadline:
        time.sleep(0.02)


@posix_only
def test_the_kept_spare_becomes_the_job_of_the_next_start_and_runs_its_command(tmp_path, no_spare_left):
    python = _stand_in(tmp_path, _SPARE_BODY)
    spare = jobs.keep_spare(python=python)
    assert spare.wait_ready(10) and spare.ready and spare.usable(python=python)
    assert jobs.keep_spare(python=python) is spare  # one spare, not one per call
    job = jobs.start(["reconstruct", "--model", "m"], python=python)
    assert job is spare and job.args == [python, "-m", "x2ct", "reconstruct", "--model", "m"]
    events = []
    assert job.wait(timeout=10, on_event=events.append) == 0
    assert events == [{"event": "got", "module": "x2ct.standby", "command": ["reconstruct", "--model", "m"]}]
    assert not spare.usable(python=python)
    with pytest.raises(X2CTError, match="given its command already"):
        spare.run(["info"])
    fresh = jobs.start(["info"], python=_stand_in(tmp_path, "echo fresh\n"))  # the spare was used up
    assert type(fresh) is jobs.Job and fresh.wait(timeout=10) == 0


@posix_only
def test_a_spare_started_otherwise_is_ended_and_a_fresh_process_runs_the_command(tmp_path, monkeypatch,
                                                                                  no_spare_left):
    python = _stand_in(tmp_path, _SPARE_BODY)
    other = tmp_path / "other"
    other.mkdir()
    for different in ({"env": {"X2CT_TEST": "other"}}, {"cwd": str(other)},
                      {"python": _stand_in(other, "echo fresh\n")}):
        spare = jobs.keep_spare(python=python)
        assert spare.wait_ready(10)
        job = jobs.start(["info"], **{"python": python, **different})
        assert job is not spare and type(job) is jobs.Job
        _wait_until_ended(spare)
        # Ended by SIGTERM, or by the end of its input when that comes first (exit 0 then): either way no command.
        assert not spare.running and spare.poll() == [], "the unused spare ends without running anything"
        job.cancel()
    monkeypatch.setattr(jobs, "SPARE_MARGIN_SECONDS", jobs.SPARE_IDLE_SECONDS)  # every spare is now too old
    spare = jobs.keep_spare(python=python)
    assert not spare.usable(python=python)
    assert jobs.start(["info"], python=python) is not spare


@posix_only
def test_a_spare_that_has_ended_is_not_used(tmp_path, no_spare_left):
    python = _stand_in(tmp_path, "exit 0\n")
    spare = jobs.keep_spare(python=python)
    _wait_until_ended(spare)
    assert not spare.usable(python=python)
    job = jobs.start(["info"], python=python)
    assert job is not spare and job.wait(timeout=10) == 0


def test_a_real_spare_gives_what_a_fresh_process_gives(tmp_path, no_spare_left):
    from x2ct.benchmarks import endtoend

    views = endtoend.write_inputs(tmp_path, quick=True)
    command = ["reconstruct", "--view", f"{views['frontal']}:frontal", "--view", f"{views['lateral']}:lateral",
               "--model", "back-projection", "--progress", "json", "--out"]
    spare = jobs.keep_spare()
    assert spare.wait_ready(300), "the spare's imports did not finish"
    warm, cold = [], []
    assert jobs.start(command + [str(tmp_path / "warm.nrrd")]).wait(300, warm.append) == 0
    assert jobs.start(command + [str(tmp_path / "cold.nrrd")]).wait(300, cold.append) == 0
    assert [e.get("stage") for e in warm] == [e.get("stage") for e in cold]
    assert warm[-1]["done"] and warm[-1]["output"] == str(tmp_path / "warm.nrrd")
    assert (tmp_path / "warm.nrrd").read_bytes() == (tmp_path / "cold.nrrd").read_bytes()
