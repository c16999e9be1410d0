"""Files the package writes: atomic writes, one run per prefix, leftovers of interrupted runs."""
import contextlib
import glob
import hashlib
import logging
import os
import secrets
import socket
import time
from typing import Iterator, List, Optional, TextIO

try:
    import fcntl
except ImportError:  # Windows: no file locks
    fcntl = None

__all__ = ['atomic_path', 'file_sha256', 'pid_alive', 'exclusive_lock', 'RunLockedError', 'prefix_lock',
           'remove_leftovers']

logger = logging.getLogger(__name__)

TMP_SUFFIX = '.tmp'


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
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path in ``path``'s folder to write to; renamed to ``path`` when the block
    ends without an exception, removed otherwise. The folder is created if needed, and the file
    gets the user's umask.

    Example::

        with atomic_path('results.json') as tmp:
            with open(tmp, 'w') as f:
                json.dump(results, f)
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


@contextlib.contextmanager
def exclusive_lock(path: str, wait: bool) -> Iterator[TextIO]:
    """Hold an exclusive ``flock`` on the file ``path`` while the block runs; yields the file,
    open for reading and writing.

    The file is created (with the user's umask) if needed and never removed: removing it would
    let a waiting process and a new one both take the lock. The system releases the lock when
    the process dies, however it dies. Without locks (Windows, a file system without them) the
    block runs unlocked, with a logged warning for the file system.

    Raises
    ------
    BlockingIOError
        With ``wait=False``, when another process holds the lock.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), 'r+') as handle:
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise
        except OSError as err:  # e.g. ENOLCK on a file system without locks
            logger.warning("%s cannot be locked (%s): going on without a lock", path, err)
        yield handle


def _holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip()


@contextlib.contextmanager
def prefix_lock(prefix: str) -> Iterator[Optional[str]]:
    """Hold ``<prefix>.lock`` while the block runs: one run per save prefix.

    The lock file records its holder (``pid <pid> on <host> since <time>``), which the refusal
    names. The lock of a killed run is taken over: the block gets that run's record (None
    when the lock was free).

    Raises
    ------
    RunLockedError
        When a live process holds it.
    """
    path = f'{prefix}.lock'
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(exclusive_lock(path, wait=False))
        except BlockingIOError:
            with open(path) as held:
                holder = held.read().strip()
            raise RunLockedError(
                f"{path} is held by another run ({holder or 'unknown holder'}): wait for it to "
                "finish, or choose another --save-prefix") from None
        previous = _holder(handle)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield previous or None
        finally:
            handle.seek(0)
            handle.truncate()


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
