"""Output files: where an output may go, and writing it all or nothing.

One rule for every file x2ct writes (volumes, X-rays, PNG previews, JSON,
imported models):

* ``check_target`` before any work: a known extension, not a folder, not one
  of the inputs, not an existing file unless ``overwrite``, a name that is
  valid UTF-8, and no file where a parent folder must be;
* ``claim`` before any work too: an exclusive lock file beside the target
  (``.NAME.x2ct-lock``, holding ``pid host``), so a second x2ct process
  writing the same output fails at once instead of both "succeeding". Making
  the lock also proves the folder is writable, so a read-only folder is
  reported before a long reconstruction, not after it;
* ``atomic_output`` to write: into a private staging folder beside the target
  (``.NAME.x2ct-PID-XXXX.partial``, same file system), then the written files
  are checked (``check`` reads them back), fsynced and renamed into place,
  the named file last. Any failure removes the staging folder and raises one
  ``X2CTError`` line ("disk full: ..." when the disk is full). Staging left by
  a killed process is removed the next time the same target is claimed;
* ``atomic_outputs`` for files that belong together: all of them or none.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from x2ct.errors import InputError, X2CTError
from x2ct.io.files import is_same_file, suffix, text_name

#: The data file that a header-only format writes beside its header (SimpleITK, compressed).
DETACHED_DATA = {".nhdr": ".raw.gz", ".mhd": ".zraw"}
LOCK_SUFFIX = ".x2ct-lock"
STAGING_SUFFIX = ".partial"
#: Locks this process holds: target -> how many nested claims.
_held: dict[Path, int] = {}


def check_target(path, formats: dict[str, str] | None, what: str, *, inputs: Iterable = (),
                 overwrite: bool = False) -> Path:
    """The output path, refused (InputError) when it can never be written as asked; nothing is created."""
    path = Path(path).expanduser()
    text_name(path, f"the output {what}")
    if formats is not None and suffix(path) not in formats:
        raise InputError(f"Cannot write {what} to {path.name}: unknown extension {suffix(path) or '(none)'}; "
                         f"use one of {', '.join(formats)}.")
    if formats is not None and not path.name.endswith(suffix(path)):  # the writers pick formats case-sensitively
        raise InputError(f"Cannot write {what} to {path.name}: write its extension in lower case "
                         f"({path.name[:len(path.name) - len(suffix(path))]}{suffix(path)}).")
    if path.is_dir():
        raise InputError(f"Cannot write {what} to {path}: it is a folder; give a file name.")
    for source in inputs:
        if source is not None and is_same_file(path, source):
            raise InputError(f"Cannot write {what} to {path}: it is also an input; choose another output name.")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise InputError(f"Cannot write {what} to {path}: it exists and is not a regular file.")
        if not overwrite:
            raise InputError(f"{path} exists; pass --overwrite to replace it or choose another output name.")
    data = path.with_name(path.name[:len(path.name) - len(suffix(path))] + DETACHED_DATA.get(suffix(path), ""))
    if data != path and (data.exists() or data.is_symlink()) and not overwrite:
        raise InputError(f"{data} exists, and {path.name} would write its data there; pass --overwrite to replace "
                         "both or choose another output name.")
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise InputError(f"Cannot write {what} to {path}: {ancestor} is a file, not a folder.")
    return path


@contextlib.contextmanager
def claim(paths: Iterable):
    """Hold exclusive locks on output paths for the duration (re-entrant within this process).

    Missing parent folders are made; those made here are removed again if
    the block fails and they are still empty. A target locked by a live x2ct
    process is refused; a lock left by a dead one is taken over, and staging
    folders it left for that target are removed.
    """
    made: list[Path] = []
    taken: list[Path] = []
    try:
        for path in dict.fromkeys(Path(p).expanduser().absolute() for p in paths):
            made += _make_parents(path.parent)
            _lock(path)
            taken.append(path)
        yield
    except BaseException:
        for path in reversed(taken):
            _unlock(path)
        taken.clear()
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        for path in reversed(taken):
            _unlock(path)


@contextlib.contextmanager
def atomic_output(path, *, overwrite: bool = True, check: Callable[[Path], None] | None = None,
                  needed_bytes: int = 0):
    """Yield a path to write to; move what was written over ``path`` only when all of it is sound.

    The writer works in a staging folder beside the target, under the
    target's own name, so formats with a detached data file (.nhdr, .mhd)
    keep their internal references. ``check(staged_path)`` reads the result
    back (raising on a short or corrupt file). Data files move first, the
    named file last, so a reader never sees a header without its data.
    Without ``overwrite`` an existing target is never replaced, even one that
    appeared while writing. ``needed_bytes`` (the uncompressed size) tells a
    failure from a full disk. Library messages printed on stderr by the
    writer (ITK, MetaIO) are captured, not shown.
    """
    path = Path(path).expanduser()
    with claim([path]):
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.x2ct-{os.getpid()}-", suffix=STAGING_SUFFIX,
                                        dir=path.parent))
        try:
            with _captured_stderr() as captured:
                yield staging / path.name
            produced = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
            if not (staging / path.name).is_file():
                raise X2CTError(f"Could not write {path}: the writer produced no file"
                                f"{': ' + captured() if captured() else ''}.")
            if check is not None:
                try:
                    check(staging / path.name)
                except Exception as error:  # a short or corrupt file: report it as the write failure it is
                    raise _failure(path, error, needed_bytes, "the written file does not read back") from None
            for file in produced:
                fsync(file)
            for file in produced:
                _move(file, path.parent / file.name, overwrite)
            fsync(path.parent)
        except X2CTError:
            raise
        except (OSError, RuntimeError) as error:
            raise _failure(path, error, needed_bytes) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_outputs(targets: dict, *, overwrite: bool = True):
    """``atomic_output`` for several files that belong together: yield {key: staged path}; all of them move into
    place when the block succeeds, none when it fails. A failure names the target, not its staged copy."""
    staged: dict = {}
    try:
        with contextlib.ExitStack() as stack:
            staged.update({key: stack.enter_context(atomic_output(path, overwrite=overwrite))
                           for key, path in targets.items()})
            yield staged
    except X2CTError as error:
        message = str(error)
        for key, path in staged.items():
            target = Path(targets[key]).expanduser()
            message = message.replace(str(path), str(target)).replace(str(path.parent), str(target.parent))
        raise type(error)(message) from None


def write_text(path, text: str, *, overwrite: bool = True) -> Path:
    """Write a small text file (JSON, Markdown) all or nothing, read back before it is renamed."""
    path = Path(path).expanduser()
    data = text.encode("utf-8")

    def same(staged: Path) -> None:
        if staged.read_bytes() != data:
            raise OSError(errno.EIO, "short write")

    with atomic_output(path, overwrite=overwrite, check=same, needed_bytes=len(data)) as partial:
        partial.write_bytes(data)
    return path


def stage_folder(target: Path) -> Path:
    """A new staging folder beside ``target`` (a folder that will be moved into place), after claiming it."""
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.x2ct-{os.getpid()}-", suffix=STAGING_SUFFIX,
                                 dir=target.parent))


def failure(path: Path, error: BaseException, needed_bytes: int = 0) -> X2CTError:
    """The one-line error for a failed write; "disk full" when it was one."""
    return _failure(path, error, needed_bytes)


def _failure(path: Path, error: BaseException, needed_bytes: int, what: str = "") -> X2CTError:
    folder = _existing_ancestor(path.parent)
    try:
        usage = shutil.disk_usage(folder)
        free = usage.free if usage.total > 0 else None  # /proc and other pseudo file systems: 0 of 0, not full
    except OSError:
        free = None
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or (
            free is not None and free < max(needed_bytes, 1)):
        shown = f"{free / 2**20:.1f} MiB free" if free is not None else "no space left"
        return X2CTError(f"disk full: could not write {path} ({shown} in {folder}); free some space or "
                         "choose another output folder. Nothing was written.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return X2CTError(f"Could not write {path}: {folder} is not writable ({os.strerror(code)}); choose "
                         "another output folder.")
    reason = what or _last_line(error)
    return X2CTError(f"Could not write {path}: {reason}. Check the folder is writable and the disk has space; "
                     "nothing was written.")


def _last_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text.replace("ITK ERROR: ", "").replace("sitk::ERROR: ", "")[:300]


def _existing_ancestor(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not os.path.lexists(folder) and folder.parent != folder:
        folder = folder.parent
    return folder


def _make_parents(folder: Path) -> list[Path]:
    """Create missing folders down to ``folder``; return those created, outermost first."""
    missing = []
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"Cannot write into {missing[-1] if missing else folder}: {folder} is a file, not a "
                         "folder.")
    made = []
    for item in reversed(missing):
        try:
            item.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise _failure(item / "x", error, 0) from None
        made.append(item)
    return made


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


def _lock(path: Path) -> None:
    if path in _held:
        _held[path] += 1
        return
    lock = _lock_path(path)
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(lock)
            if owner is not None and _alive(*owner):
                raise X2CTError(f"{path} is being written by another x2ct process (pid {owner[0]}); wait for it "
                                "to finish or choose another output name.") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # left by a process that died: take it over
            continue
        except OSError as error:
            raise _failure(path, error, 0) from None
        try:
            os.write(handle, me.encode())
        finally:
            os.close(handle)
        _held[path] = 1
        _remove_stale_staging(path)
        return
    raise X2CTError(f"Could not lock {path} for writing (another process keeps taking it); try again.")


def _unlock(path: Path) -> None:
    if path not in _held:
        return
    _held[path] -= 1
    if _held[path] == 0:
        del _held[path]
        with contextlib.suppress(OSError):
            _lock_path(path).unlink()


def _read_owner(lock: Path) -> tuple[int, str] | None:
    try:
        pid, host = lock.read_text(encoding="utf-8", errors="replace").split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None  # unreadable or half-written: treated as left behind


def _alive(pid: int, host: str) -> bool:
    """Whether the process that wrote a lock may still run (another host's process: assume it does)."""
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return _windows_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _windows_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x00100000, False, pid)  # SYNCHRONIZE
    if not handle:
        return False
    try:
        return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: still running
    finally:
        kernel32.CloseHandle(handle)


def _remove_stale_staging(path: Path) -> None:
    """Staging folders of this target left by a killed writer (we hold its lock, so none is live)."""
    prefix = f".{path.name}.x2ct-"
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            if entry.name.startswith(prefix) and entry.name.endswith(STAGING_SUFFIX):
                shutil.rmtree(entry, ignore_errors=True)


def _move(source: Path, target: Path, overwrite: bool) -> None:
    """Rename into place; without ``overwrite`` never replace an existing file (hard link, then unlink)."""
    if overwrite:
        os.replace(source, target)
        return
    try:
        os.link(source, target)
    except FileExistsError:
        raise X2CTError(f"{target} appeared while it was being written; it was kept. Pass --overwrite to "
                        "replace it or choose another output name.") from None
    except (OSError, NotImplementedError):  # no hard links here (FAT, some network shares)
        if os.path.lexists(target):
            raise X2CTError(f"{target} exists; pass --overwrite to replace it or choose another output "
                            "name.") from None
        os.replace(source, target)
        return
    os.unlink(source)


def fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk."""
    if os.name == "nt" and path.is_dir():
        return  # folders cannot be opened for fsync on Windows
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot fsync folders
            raise
    finally:
        os.close(handle)


@contextlib.contextmanager
def _captured_stderr():
    """Capture what C++ libraries print on file descriptor 2 (whatever Python's sys.stderr is); yield a
    function returning it."""
    fd = 2
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no file descriptor 2 (some GUI processes): nothing to hide
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        text = []

        def read() -> str:
            return " ".join(text)[:300]

        try:
            yield read
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text.append(" ".join(sink.read().decode("utf-8", "replace").split()))
