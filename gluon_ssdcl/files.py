"""Writing files so that an interrupted write never leaves a half-written one."""
import contextlib
import os
import tempfile
from typing import Iterator

__all__ = ['atomic_path']


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path in ``path``'s folder to write to; renamed to ``path`` when the block
    ends without an exception, removed otherwise. The folder is created if needed.

    Example::

        with atomic_path('results.json') as tmp:
            with open(tmp, 'w') as f:
                json.dump(results, f)
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
