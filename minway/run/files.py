"""Reading the files minway is given, and writing files that other processes, and a crash,
may see half-done.

``regular_file``, ``read_text``, ``read_json``: a file is read only when it is a regular file
of a sane size (a FIFO or /dev/zero would never end), and what is in it that cannot be read
(not UTF-8, not JSON, JSON nested past what Python parses) is a one-line error.
``atomic_write``: the new content goes to a temporary file of a name no other writer
uses, is flushed to disk, renamed onto the target, and the directory is flushed too, so
that after a crash or power loss the target holds the old content or the new, never a
mix or nothing. A write that fails (a full disk, a read-only file system, a file where a
directory is needed) is a one-line error that names the file and says what to do.
``json_text``: JSON as the standard defines it (a NaN or an infinity is refused, never written).
``plain_directory``, ``refuse_link``: minway writes in directories it makes, never through a
symbolic link planted where one of them, or one of their files, is expected.
``DirectoryLock``: one process at a time in a run or sweep directory.
"""
import errno
import fcntl
import json
import os
import socket
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from minway.errors import MinwayError

_UMASK = os.umask(0)
os.umask(_UMASK)

LOCK_FILE = "lock"

# what to do when a write fails with this errno
WRITE_ADVICE = {
    errno.ENOSPC: "free space on that file system, or write elsewhere",
    errno.EDQUOT: "free space within your disk quota, or write elsewhere",
    errno.EROFS: "that file system is read-only: write elsewhere",
    errno.EACCES: "you may not write there: write elsewhere, or change its permissions",
    errno.EPERM: "you may not write there: write elsewhere, or change its permissions",
    errno.ENOTDIR: "a file stands where a directory is needed: move it away, or write elsewhere",
    errno.EEXIST: "a file stands where a directory is needed: move it away, or write elsewhere",
    errno.EISDIR: "a directory stands where a file is needed: move it away, or write elsewhere",
}


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


def read_text(path, what, limit):
    """The UTF-8 text of the regular file ``path`` (``regular_file``)."""
    path = regular_file(path, what, limit)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise MinwayError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start}): give a text file") \
            from None


def read_json(path, what, limit, advice="give a JSON file"):
    """The JSON value of the regular file ``path``; ``advice``: what to do when it is not JSON."""
    content = regular_file(path, what, limit).read_bytes()
    if not content.strip():
        raise MinwayError(f"{what} {path} is empty: {advice}")
    try:
        return json.loads(content.decode("utf-8"))
    except UnicodeDecodeError as e:
        reason = f"not UTF-8 text: {e.reason} at byte {e.start}"
    except ValueError as e:
        reason = str(e)
    except RecursionError:
        reason = "nested too deeply to parse"
    raise MinwayError(f"{what} {path} is not valid JSON ({reason}): {advice}")


def cannot_write(path, error, what=""):
    """The MinwayError of a write of ``what`` (e.g. "the checkpoint") at ``path`` that failed with the
    OSError ``error``: the file, the system's reason, and what to do."""
    advice = WRITE_ADVICE.get(error.errno, "check that this file system can be written, then run again")
    return MinwayError(f"cannot write {what + ' ' if what else ''}{path} ({error.strerror or error}): {advice}")


@contextmanager
def writing(path, what=""):
    """Turn an OSError of the writes in the block into ``cannot_write``'s one line."""
    try:
        yield
    except OSError as e:
        raise cannot_write(path, e, what) from None


def refuse_link(path, what):
    """Refuse ``path`` when it is a symbolic link: a link planted where minway reads or writes its own files
    would have it read, write or delete where the link points, outside the directory it was given."""
    if Path(path).is_symlink():
        raise MinwayError(f"{what} {path} is a symbolic link: minway does not read, write or delete through "
                          f"one; remove the link (what it points to is left as it is), or pass another directory")
    return Path(path)


def plain_directory(path, what):
    """Make the directory ``path`` (and its parents), refused when it is a link or a file."""
    refuse_link(path, what)
    with writing(path, what):
        Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def json_text(value, indent=None):
    """``value`` as strict JSON (RFC 8259), which has no NaN or infinity: a number that is not finite is a
    ValueError, never written. Every JSON file minway writes is written through this."""
    return json.dumps(value, indent=indent, allow_nan=False)


def fsync_directory(directory):
    """Flush a directory's entries (a rename into it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write, what=""):
    """``write(tmp)``, then rename onto ``path`` (a link there is replaced, never followed); a write that
    fails leaves the old file and no temporary one, and an OSError is ``cannot_write``'s one line."""
    path = Path(path)
    with writing(path, what):
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


def atomic_write_text(path, text, what=""):
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what)


def atomic_write_json(path, value, what="", indent=2):
    atomic_write_text(path, json_text(value, indent) + "\n", what)


class DirectoryLock:
    """An exclusive lock on ``<directory>/lock``, which names the holder (pid and host).

    The lock is ``flock``'s: the kernel drops it when its process ends, however it ends,
    so a lock file left by a killed process blocks nothing. The file itself stays.
    """

    def __init__(self, directory):
        self.path = Path(directory) / LOCK_FILE
        self.fd = None

    def __enter__(self):
        try:  # not through a link: a link planted as the lock would have minway write where it points
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            if e.errno in WRITE_ADVICE:  # a full or read-only file system, not a lock of the wrong kind
                raise cannot_write(self.path, e, "the lock") from None
            raise MinwayError(f"{self.path} cannot be opened as a lock ({e.strerror}): it must be a plain file, "
                              f"or absent") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with writing(self.path, "the lock"):
                os.ftruncate(fd, 0)
                os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise MinwayError(f"{self.path.parent} is in use by {holder}: wait for it to end, or stop it "
                              f"and run again") from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock
        self.fd = None
