"""Run an ``x2ct`` command as a background process and follow its JSON-lines progress.

Slicer must never freeze while a model trains or reconstructs, and a cancel
must stop every process the command started (a training run may spawn data
loader or torchrun workers). So a ``Job`` starts ``python -m x2ct ...`` in its
own process group (session), reads stdout on a thread that parses one JSON
object per line, keeps the tail of stderr for a readable error, and on cancel
terminates and then kills the whole group; a GUI cancels without waiting and
its poll timer does the kill. The caller polls; nothing here needs Qt or Slicer.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from x2ct import standby
from x2ct.errors import X2CTError

# The folder holding the x2ct package: put on the child's PYTHONPATH so that a
# source checkout (e.g. the Slicer extension run from its build tree) imports.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
#: Windows STARTUPINFO values (STARTF_USESHOWWINDOW, SW_HIDE) that start a console program with its window
#: hidden, as ``slicer.util.launchConsoleProcess`` does; ``subprocess`` defines them only on Windows.
_STARTF_USESHOWWINDOW, _SW_HIDE = 1, 0


def _windows() -> bool:
    return os.name == "nt"


def process_options(new_group: bool = True) -> dict:
    """``subprocess`` keyword arguments for a background process started from Slicer.

    ``new_group``: its own process group (session), so that a cancel reaches
    the whole tree. On Windows the console window is hidden (PythonSlicer,
    pip and taskkill are console programs, and each would otherwise open a
    window); hidden, not absent, so the child still gets the CTRL_BREAK that
    asks it to stop.
    """
    if not _windows():
        return {"start_new_session": True} if new_group else {}
    info = subprocess.STARTUPINFO()
    info.dwFlags |= _STARTF_USESHOWWINDOW
    info.wShowWindow = _SW_HIDE
    options = {"startupinfo": info}
    if new_group:
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    return options


def default_python() -> str:
    """The interpreter for the child: Slicer's ``PythonSlicer`` inside 3D Slicer, else this Python.

    ``slicer`` is looked up in ``sys.modules`` at call time (never imported), so
    the core package stays Slicer-free. Inside Slicer the launcher is looked up
    next to the application: Slicer points ``sys.executable`` at it too, but
    the application folder does not depend on that.
    """
    slicer = sys.modules.get("slicer")
    app = getattr(slicer, "app", None)
    if app is not None and hasattr(app, "applicationDirPath"):
        name = "PythonSlicer.exe" if _windows() else "PythonSlicer"
        folder = Path(str(app.applicationDirPath()))
        # Linux and Windows: <Slicer>/bin; macOS: Slicer.app/Contents/MacOS with bin/ beside it.
        for candidate in (folder / name, folder.parent / "bin" / name):
            if candidate.is_file():
                return str(candidate)
        found = shutil.which(name)
        if found:
            return found
    return sys.executable


def child_environment(env: dict | None = None) -> dict:
    """The environment of a child ``x2ct`` process: this one's, plus ``env``, with the source on PYTHONPATH."""
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SOURCE_ROOT), child_env.get("PYTHONPATH", "")) if p)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault("PYTHONIOENCODING", "utf-8")
    return child_env


def pause(seconds: float) -> None:
    """Sleep between polls; inside 3D Slicer, let its window repaint and take clicks meanwhile.

    The blocking console calls (``reconstruct``, ``train``) wait with this, so
    Slicer never looks frozen while a background job runs. ``slicer`` is looked
    up, never imported, as in ``default_python``.
    """
    app = getattr(sys.modules.get("slicer"), "app", None)
    if app is not None and hasattr(app, "processEvents"):
        app.processEvents()
    time.sleep(seconds)


def _event(line: str) -> dict:
    """One stdout line as an event: the JSON object itself, or a text event for anything else."""
    text = line.rstrip("\r\n")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"event": "text", "text": text}


class Job:
    """``python -m x2ct *args`` in the background; ``poll()`` for its events, ``cancel()`` to stop it.

    ``env`` holds variables added to the current environment (not a
    replacement). Events are dicts parsed from stdout lines; lines that are not
    a JSON object arrive as ``{"event": "text", "text": line}``. ``running``
    stays true until the process has ended AND its output has been read, so one
    ``poll()`` after ``running`` turns false returns the last events.
    """

    def __init__(self, args: list[str], cwd=None, env: dict | None = None, python: str | None = None):
        self.args = [python or default_python(), "-m", "x2ct", *[str(a) for a in args]]
        self._start(self.args, cwd, child_environment(env), subprocess.DEVNULL)

    def _start(self, command: list[str], cwd, env: dict, stdin) -> None:
        try:
            self._process = subprocess.Popen(
                command, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1,
                **process_options())
        except OSError as error:
            raise X2CTError(f"Cannot start {command[0]} ({error.strerror or error}); check the Python "
                            "installation.") from None
        self.cancelled = False
        self._kill_at: float | None = None  # after a cancel: when what is left of the tree is killed
        self._killed = False
        self._events: queue.Queue = queue.Queue()
        self._stderr: collections.deque = collections.deque(maxlen=200)
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _read_stdout(self) -> None:
        with self._process.stdout as stream:
            for line in stream:
                self._take(_event(line))

    def _take(self, event: dict) -> None:
        self._events.put(event)

    def _read_stderr(self) -> None:
        with self._process.stderr as stream:
            for line in stream:
                if line.strip():
                    self._stderr.append(line.strip())

    @property
    def running(self) -> bool:
        return self._process.poll() is None or any(r.is_alive() for r in self._readers)

    @property
    def returncode(self) -> int | None:
        return None if self.running else self._process.returncode

    @property
    def error(self) -> str | None:
        """Why the job failed, in one line; None while running or after success."""
        code = self.returncode
        if code in (None, 0):
            return None
        if self.cancelled:
            return "cancelled"
        lines = list(self._stderr)
        for line in reversed(lines):  # the CLI's "x2ct <command>: error: ..." line
            if "error:" in line.lower():
                return line
        if lines:  # e.g. the last line of a traceback, "RuntimeError: ..."
            return lines[-1]
        return f"stopped by signal {-code}" if code < 0 else f"exited with code {code}"

    def poll(self) -> list[dict]:
        """The events received since the last poll (never blocks); kills a cancelled tree once its grace is over."""
        if self._kill_at is not None and not self._killed and time.monotonic() >= self._kill_at:
            self._kill()
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, timeout: float | None = None, on_event=None) -> int:
        """Block until the job ends, handing each event to ``on_event``; the exit code.

        Raises ``TimeoutError`` after ``timeout`` seconds (the job keeps running).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                event = self._events.get(timeout=0.1)
            except queue.Empty:
                if not self.running and self._events.empty():
                    return self._process.returncode
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"x2ct {' '.join(self.args[3:4])} still running after {timeout} s")
                continue
            if on_event is not None:
                on_event(event)

    def cancel(self, timeout: float = 5.0, wait: bool = True) -> None:
        """Stop the whole process tree: ask it to stop now, kill what is left after ``timeout`` seconds.

        ``wait=False`` returns at once, for a GUI thread: a later ``poll()``
        kills what is left once ``timeout`` has passed, and ``running`` turns
        false when the tree has ended. ``wait=True`` blocks until then.
        """
        if not self.running:
            return  # over, output read: no group left (and its id may already belong to someone else)
        if self._process.poll() is None:
            self.cancelled = True
        if self._kill_at is None:
            self._kill_at = time.monotonic() + timeout
            self._ask_to_stop()
        if not wait:
            return
        while self._tree_alive() and time.monotonic() < self._kill_at:
            self._process.poll()  # reap the leader so it does not count as alive
            time.sleep(0.05)
        if not self._killed:
            self._kill()
        self._process.wait()
        for reader in self._readers:
            reader.join(timeout=timeout)

    def _ask_to_stop(self) -> None:
        if _windows():
            try:
                self._process.send_signal(signal.CTRL_BREAK_EVENT)
            except OSError:
                pass
        else:
            self._signal_group(signal.SIGTERM)

    def _kill(self) -> None:
        """Kill every process of the tree still there (those that ignored the request to stop)."""
        self._killed = True
        if _windows():  # taskkill /T ends the children too, whether or not the parent is still there
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False, **process_options(new_group=False))
        else:
            self._signal_group(signal.SIGKILL)

    def _tree_alive(self) -> bool:
        return self._process.poll() is None if _windows() else self._group_alive()

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self._process.pid, sig)  # the session leader's pid is the group id
        except (ProcessLookupError, PermissionError):
            pass

    def _group_alive(self) -> bool:
        """Whether any process of the group is still running (zombies do not count)."""
        if self._process.poll() is None:
            return True
        proc = Path("/proc")
        if not proc.is_dir():  # no procfs (macOS): a signal probe, which also counts zombies
            try:
                os.killpg(self._process.pid, 0)
                return True
            except (ProcessLookupError, PermissionError):
                return False
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self._process.pid and fields[0] != "Z":  # pgrp, state
                return True
        return False


#: How long a spare waits for its command (it holds torch and MONAI in memory meanwhile), and how long before
#: then it stops being handed one, so that it never quits just as a command arrives.
SPARE_IDLE_SECONDS = 900.0
SPARE_MARGIN_SECONDS = 60.0


class Spare(Job):
    """A spare ``x2ct`` process (``x2ct.standby``) with its imports done, waiting to become the Job of one command.

    ``run(args)`` hands it ``args`` and returns it as the Job of ``python -m
    x2ct args``: the same events, errors and cancel as a fresh Job, without
    the seconds of imports. ``ready`` turns true once the imports are done; a
    command handed over earlier waits for them. ``drop()`` ends an unused one.
    """

    def __init__(self, cwd=None, env: dict | None = None, python: str | None = None,
                 idle: float = SPARE_IDLE_SECONDS):
        self.python = python or default_python()
        self.args = [self.python, "-m", "x2ct.standby", "--idle", f"{idle:g}"]
        self.cwd, self.environment, self.idle = cwd, child_environment(env), idle
        self.handed = False
        self._ready = threading.Event()
        self._born = time.monotonic()
        self._start(self.args, cwd, self.environment, subprocess.PIPE)

    def _take(self, event: dict) -> None:
        if event == standby.READY:
            self._ready.set()
        else:
            super()._take(event)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the imports are done (True), or ``timeout`` seconds (False)."""
        return self._ready.wait(timeout)

    def usable(self, cwd=None, env: dict | None = None, python: str | None = None) -> bool:
        """Whether a command with these settings may be handed to it.

        Not handed one yet, still running, started with the same interpreter,
        folder and environment (a Job started now would get the same), and far
        enough from its idle exit.
        """
        return (not self.handed and self._process.poll() is None
                and time.monotonic() - self._born < self.idle - SPARE_MARGIN_SECONDS
                and (python or default_python()) == self.python and cwd == self.cwd
                and child_environment(env) == self.environment)

    def run(self, args: list[str]) -> "Spare":
        """Hand it ``python -m x2ct args``; X2CTError when it was handed one before or has ended."""
        if self.handed:
            raise X2CTError("This spare x2ct process has been given its command already.")
        self.handed = True
        arguments = [str(a) for a in args]
        self.args = [self.python, "-m", "x2ct", *arguments]
        try:
            self._process.stdin.write(json.dumps(arguments) + "\n")
            self._process.stdin.close()
        except OSError:  # a broken pipe: it has ended
            raise X2CTError("The spare x2ct process ended before it was given its command.") from None
        return self

    def drop(self) -> None:
        """End it unused (nothing runs in it: a command is only ever handed over by ``run``)."""
        if self.handed:
            return
        self.handed = True
        try:
            self._process.stdin.close()
        except OSError:
            pass
        if self._process.poll() is None:
            self._ask_to_stop()


_spare: Spare | None = None
_spare_lock = threading.Lock()


def start(args: list[str], cwd=None, env: dict | None = None, python: str | None = None) -> Job:
    """A Job for ``python -m x2ct args``: the spare left by ``keep_spare`` when it fits, else a fresh process."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None:
        if spare.usable(cwd, env, python):
            try:
                return spare.run(args)
            except X2CTError:
                pass
        spare.drop()
    return Job(args, cwd, env, python)


def keep_spare(cwd=None, env: dict | None = None, python: str | None = None,
               idle: float = SPARE_IDLE_SECONDS) -> Spare | None:
    """Have a spare wait for the next ``start`` with these settings (a new one only when none fits); it, or
    None when it could not be started (the next ``start`` is then a fresh process)."""
    global _spare
    with _spare_lock:
        if _spare is not None and _spare.usable(cwd, env, python):
            return _spare
        if _spare is not None:
            _spare.drop()
        try:
            _spare = Spare(cwd, env, python, idle)
        except X2CTError:
            _spare = None
        return _spare


def drop_spare() -> None:
    """End the waiting spare, if any (it would otherwise end by itself after its idle time or with this process)."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None:
        spare.drop()
