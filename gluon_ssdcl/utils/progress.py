"""Progress bars: tqdm bars on stderr when it is a terminal, unless a caller forces them on or off
for the duration of a block (:func:`progress_bars`)."""
import contextlib
import contextvars
import sys
from typing import Iterable, Iterator, Optional

from tqdm import tqdm

__all__ = ['progress_bars', 'progress_enabled', 'progress']

_FORCED = contextvars.ContextVar('gluon_ssdcl_progress', default=None)


@contextlib.contextmanager
def progress_bars(enabled: Optional[bool]) -> Iterator[None]:
    """Show (True) or hide (False) the package's progress bars while the block runs; None
    keeps the default, bars when stderr is a terminal. The setting is undone afterwards."""
    token = _FORCED.set(enabled)
    try:
        yield
    finally:
        _FORCED.reset(token)


def progress_enabled() -> bool:
    """Whether progress bars are shown here: as forced by :func:`progress_bars`, else whether
    stderr is a terminal."""
    forced = _FORCED.get()
    if forced is not None:
        return forced
    return bool(getattr(sys.stderr, 'isatty', None) and sys.stderr.isatty())


def progress(iterable: Iterable, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr, disabled unless :func:`progress_enabled`."""
    return tqdm(iterable, disable=not progress_enabled(), **kwargs)
