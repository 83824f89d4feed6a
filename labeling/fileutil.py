"""Atomic writes: a reader sees the old file or the whole new one, never half of one."""
import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

from hackathon.core.errors import KitError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final):
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a finished file gets the usual mode
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path, data: bytes):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path, text: str):
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive lock on `path` (created if missing) against other processes: flock on
    POSIX, msvcrt's byte lock on Windows. It goes with the process, so a killed holder never leaves
    a stale lock behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")
    except OSError as e:
        raise KitError(f"{display(path)}: cannot open the lock file ({e.strerror}). Fix: make the workspace "
                       "writable, or remove what is in the way at that path.") from None
    with f:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            f.seek(0)
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)  # retries for 10 s, then raises
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError as e:  # a network file system without locks: go on unlocked, as before locks
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def display(path) -> str:
    """A path as a person can read it, even when its name holds bytes that are not UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
