"""Writing files that other processes, and a crash, may see half-done.

``atomic_write``: the new content goes to a temporary file of a name no other writer
uses, is flushed to disk, renamed onto the target, and the directory is flushed too, so
that after a crash or power loss the target holds the old content or the new, never a
mix or nothing. ``DirectoryLock``: one process at a time in a run or sweep directory.
"""
import fcntl
import os
import socket
import stat
import tempfile
from pathlib import Path

from minway.errors import MinwayError

_UMASK = os.umask(0)
os.umask(_UMASK)

LOCK_FILE = "lock"


def regular_file(path, what, limit):
    """``path`` when it is a regular file of at most ``limit`` bytes, else a MinwayError that calls it
    ``what``. A directory, a FIFO or a device (/dev/zero) is refused unread: reading one may never end."""
    path = Path(path)
    try:
        mode, size = path.stat().st_mode, path.stat().st_size
    except FileNotFoundError:
        raise MinwayError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise MinwayError(f"{what} {path} is not a regular file: give a text file")
    if size > limit:
        raise MinwayError(f"{what} {path} holds {size:,} bytes, more than the {limit:,} it may: give the right file")
    return path


def fsync_directory(directory):
    """Flush a directory's entries (a rename into it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write):
    """``write(tmp)``, then rename onto ``path``; a write that fails leaves the old file and no temporary one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; the target gets what open() would give
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path, text):
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class DirectoryLock:
    """An exclusive lock on ``<directory>/lock``, which names the holder (pid and host).

    The lock is ``flock``'s: the kernel drops it when its process ends, however it ends,
    so a lock file left by a killed process blocks nothing. The file itself stays.
    """

    def __init__(self, directory):
        self.path = Path(directory) / LOCK_FILE
        self.fd = None

    def __enter__(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise MinwayError(f"{self.path.parent} is in use by {holder}: wait for it to end, or stop it "
                              f"and run again") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock
        self.fd = None
