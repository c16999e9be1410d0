"""Files the package writes: atomic writes, one run per prefix, leftovers of interrupted runs."""
import contextlib
import errno
import glob
import hashlib
import logging
import os
import secrets
import socket
import stat
import time
from typing import Iterator, List, Optional, TextIO, Tuple

from .errors import one_line

try:
    import fcntl
except ImportError:  # Windows: no file locks
    fcntl = None

__all__ = ['atomic_path', 'remove_open_temporaries', 'naming_failures', 'check_file',
           'file_sha256', 'pid_alive', 'exclusive_lock', 'RunLockedError', 'prefix_lock',
           'remove_leftovers']

logger = logging.getLogger(__name__)

TMP_SUFFIX = '.tmp'

_OPEN_TEMPORARIES = set()  # the temporary files of this process's atomic_path blocks not ended


def _temporary_name(path: str) -> str:
    """A new, empty file beside ``path`` created with the user's umask (mode 0666 & ~umask)."""
    folder, base = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f'{base}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}')
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def naming_failures(path: str, errors: Tuple[type, ...] = ()) -> Iterator[None]:
    """Raise a system error of the block that names no file (a full disk: ``[Errno 28] No
    space left on device``) as an ``OSError`` that names ``path``: ``cannot write <path>:
    <reason>``.

    Parameters
    ----------
    path : str
        The file the block writes.
    errors : tuple of exception types
        Converted too (e.g. MXNet's error for ``FileStream.Write incomplete``).
    """
    try:
        yield
    except (OSError, *errors) as err:
        if isinstance(err, OSError) and (err.errno is None or err.filename is not None):
            raise  # no system error, or it names its file
        raise OSError(f"cannot write {path}: {one_line(err)}") from err


def check_file(path: str, what: str = 'file') -> None:
    """Raise unless ``path`` is a regular file (through symlinks), saying what it is instead.

    Raises
    ------
    FileNotFoundError
        ``<what> <path> does not exist`` (or ``is a broken symlink to <target>``).
    IsADirectoryError
        ``<what> <path> is a directory, not a file``.
    OSError
        ``<what> <path> is a symlink loop``, or another reason it cannot be reached, or it is
        not a regular file (a device, a pipe).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(f"{what} {path} is a broken symlink to "
                                    f"{os.readlink(path)}") from None
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as err:
        reason = ('is a symlink loop' if err.errno == errno.ELOOP else
                  f'cannot be read: {err.strerror}')
        raise OSError(f"{what} {path} {reason}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise OSError(f"{what} {path} is not a regular file")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path in ``path``'s folder to write to; renamed to ``path`` when the block
    ends without an exception, removed otherwise. The folder is created if needed, and the file
    gets the user's umask. A failure that names no file (a full disk) is raised naming ``path``
    (:func:`naming_failures`).

    Example::

        with atomic_path('results.json') as tmp:
            with open(tmp, 'w') as f:
                json.dump(results, f)
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary_name(path)
    _OPEN_TEMPORARIES.add(tmp)
    try:
        with naming_failures(path):
            yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        _OPEN_TEMPORARIES.discard(tmp)


def remove_open_temporaries() -> None:
    """Remove the temporary files of :func:`atomic_path` blocks that have not ended. An
    interrupt that lands between a ``with`` statement and its block (or in its exit code before
    the clean-up) skips the block's clean-up until the generator is collected, which may not
    happen before the process ends: the interrupted commands call this on their way out."""
    for tmp in list(_OPEN_TEMPORARIES):
        if os.path.lexists(tmp):
            os.remove(tmp)
        _OPEN_TEMPORARIES.discard(tmp)


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class RunLockedError(OSError):
    """Another live process holds the lock of a save prefix."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts). Always True on Windows, where signal 0
    would end the process."""
    if os.name == 'nt':
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _names(path: str, handle) -> bool:
    """Whether ``path`` names the open file ``handle`` (not a removed or another file)."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


def _lock(handle, path: str, wait: bool) -> None:
    """``flock`` the open file ``handle``; on a file system without locks, warn and go on."""
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        raise
    except OSError as err:  # e.g. ENOLCK on a file system without locks
        logger.warning("%s cannot be locked (%s): going on without a lock", path, err)


@contextlib.contextmanager
def exclusive_lock(path: str, wait: bool, remove: bool = False) -> Iterator[TextIO]:
    """Hold an exclusive ``flock`` on the file ``path`` while the block runs; yields the file,
    open for reading and writing.

    The file is created (with the user's umask) if needed. With ``remove`` it is removed when
    the block ends, while still locked. A process that opened it before then locks a removed
    file, so after locking, the path must still name the file locked, or it is opened and
    locked again: two processes never both hold the lock. The system releases the lock when
    the process dies, however it dies (the file then stays). Without locks (Windows, a file
    system without them) the block runs unlocked, with a logged warning for the file system.

    Raises
    ------
    BlockingIOError
        With ``wait=False``, when another process holds the lock.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    while True:
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), 'r+')
        try:
            _lock(handle, path, wait)
        except BaseException:
            handle.close()
            raise
        if _names(path, handle):
            break
        handle.close()  # its holder removed it after this process opened it
    with handle:
        try:
            yield handle
        finally:
            if remove and _names(path, handle):
                os.remove(path)


def _holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip()


@contextlib.contextmanager
def prefix_lock(prefix: str) -> Iterator[Optional[str]]:
    """Hold ``<prefix>.lock`` while the block runs: one run per save prefix.

    The lock file records its holder (``pid <pid> on <host> since <time>``), which the refusal
    names, and is removed when the block ends (:func:`exclusive_lock`). The lock of a killed
    run, whose file stays, is taken over: the block gets that run's record (None when the lock
    was free).

    Raises
    ------
    RunLockedError
        When a live process holds it.
    """
    path = f'{prefix}.lock'
    with contextlib.ExitStack() as stack:
        handle = _take_lock(stack, path)
        previous = _holder(handle)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield previous or None


def _take_lock(stack: contextlib.ExitStack, path: str) -> TextIO:
    """Enter :func:`exclusive_lock` of the lock file ``path`` (removed at the end) on ``stack``;
    :class:`RunLockedError` naming its holder when another process holds it."""
    while True:
        try:
            return stack.enter_context(exclusive_lock(path, wait=False, remove=True))
        except BlockingIOError:
            try:
                with open(path) as held:
                    holder = held.read().strip()
            except FileNotFoundError:
                continue  # its holder has just finished and removed it
            raise RunLockedError(
                f"{path} is held by another run ({holder or 'unknown holder'}): wait for it to "
                "finish, or choose another --save-prefix") from None


def remove_leftovers(prefix: str) -> List[str]:
    """Remove the temporary files an interrupted write left under ``prefix`` (call it while
    holding :func:`prefix_lock`, when no other process can be writing them); returns them."""
    folder, base = os.path.split(os.path.abspath(prefix))
    pattern = os.path.join(glob.escape(folder), glob.escape(base) + '_*' + TMP_SUFFIX)
    removed = [path for path in glob.glob(pattern) if os.path.isfile(path)]
    for path in removed:
        os.remove(path)
        logger.info("removed %s, left by an interrupted save", path)
    return removed
