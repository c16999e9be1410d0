"""What every command line of the package shares: one rule for flags, errors and exit codes.

- Bad usage exits with code 2 and one line naming the flag (:class:`OneLineErrorParser`),
  no usage dump, no traceback.
- A runtime failure (unreadable or mismatched checkpoint, bad data, NaN, no GPU) exits with
  code 1 and one line naming the file (:func:`run`).
- The flags that several commands take are added by one function each, so they have the same
  name, type and default everywhere.
- Logging handlers are set up only when a module runs as a program (:func:`program`); called
  from Python (a notebook), a command leaves the process's logging alone.
"""
import argparse
import contextlib
import logging
import math
import os
import sys
from typing import Any, Callable, Iterator, List, Optional, Sequence

import mxnet as mx

from ..data.digitset import parse_classes
from ..model import pretrained
from ..utils.errors import one_line
from . import exit_on_interrupt

__all__ = ['CommandError', 'UsageError', 'OneLineErrorParser', 'integer', 'number',
           'positive_int', 'positive_float', 'nonnegative_int', 'comma_separated', 'class_names',
           'as_given', 'classes_flag', 'output_folder', 'gpu_ids', 'contexts',
           'add_checkpoint_flag', 'checkpoint_path', 'add_gpus_flag', 'add_loader_flags',
           'add_knn_flag', 'one_line', 'run', 'program', 'log_to_file', 'RUNTIME_ERRORS']

PACKAGE_LOGGER = 'gluon_ssdcl'
LOG_FORMAT = '%(asctime)s %(message)s'


class CommandError(RuntimeError):
    """A runtime failure a command reports in one line (exit code 1)."""


class UsageError(ValueError):
    """Bad usage found after parsing (e.g. a flag that contradicts a checkpoint): exit code 2."""


# NaN losses (FloatingPointError), missing or unwritable files, bad data or checkpoints, MXNet
RUNTIME_ERRORS = (CommandError, FloatingPointError, OSError, ValueError, mx.base.MXNetError)


class OneLineErrorParser(argparse.ArgumentParser):
    """Reports a bad flag in one line (no usage dump, no traceback) and exits with code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _range_text(low, high, low_open: bool = False, high_open: bool = False) -> str:
    """``'>= 0 and < 1'``: the range of a flag's values, in words (a bound may be None)."""
    bounds = [f"{sign} {bound}" for bound, sign in ((low, '>' if low_open else '>='),
                                                    (high, '<' if high_open else '<='))
              if bound is not None]
    return ' and '.join(bounds)


def _bounded(convert: Callable[[str], Any], wanted: str,
             within: Callable[[Any], bool]) -> Callable[[str], Any]:
    """argparse type: ``convert(text)`` when ``within`` it, else one line saying ``wanted``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{wanted}, got {text!r}") from None
        if not within(value):
            raise argparse.ArgumentTypeError(f"{wanted}, got {text}")
        return value
    return parse


def integer(low: Optional[int] = None, high: Optional[int] = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]`` (a bound may be None)."""
    kind = 'a positive integer' if low == 1 else 'an integer'
    wanted = f"must be {kind} {_range_text(None if low == 1 else low, high)}".rstrip()
    return _bounded(int, wanted, lambda value: (low is None or value >= low)
                    and (high is None or value <= high))


def number(low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number (not NaN, not infinite) between ``low`` and ``high``,
    either bound excluded when ``low_open`` / ``high_open`` (a bound may be None)."""
    wanted = f"must be a finite number {_range_text(low, high, low_open, high_open)}".rstrip()
    return _bounded(float, wanted, lambda value: (
        math.isfinite(value)
        and (low is None or value > low or (value == low and not low_open))
        and (high is None or value < high or (value == high and not high_open))))


positive_int = integer(1)
nonnegative_int = integer(0)
positive_float = number(0, low_open=True)


def comma_separated(item: Callable[[str], Any], distinct: bool = False) -> Callable[[str], list]:
    """argparse type: comma-separated values, each read by the argparse type ``item``; ``''``
    gives []. An empty value (``'a,,b'``) is refused, and so is a repeated one with
    ``distinct``."""
    def parse(text: str) -> list:
        if not text.strip():
            return []
        parts = [part.strip() for part in text.split(',')]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"an empty value in {text!r}")
        values = [item(part) for part in parts]
        repeated = sorted({part for part, value in zip(parts, values) if values.count(value) > 1})
        if distinct and repeated:
            raise argparse.ArgumentTypeError(
                f"{', '.join(map(repr, repeated))} is repeated in {text!r}")
        return values
    return parse


# ``--classes``: distinct, non-empty class names
class_names = comma_separated(str, distinct=True)


def as_given(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """argparse type: the flag's text unchanged, once ``parse`` (an argparse type) accepts it,
    for a flag whose text the command reads itself."""
    def check(text: str) -> str:
        parse(text)
        return text
    return check


def output_folder(text: str) -> str:
    """argparse type of ``-o/--output-dir``: a folder, existing or not, but not a file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return text


def classes_flag(text: str) -> List[int]:
    """argparse type of ``--exclude-classes`` / ``--digits-exclude`` / ``register --classes``:
    :func:`~gluon_ssdcl.data.digitset.parse_classes`, its error given to argparse."""
    try:
        return parse_classes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def gpu_ids(text: str) -> List[int]:
    """argparse type of ``--gpus``: ``''`` -> [] (the CPU), ``'0,1'`` -> [0, 1]."""
    try:
        ids = [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated GPU ids such as '0,1', got {text!r}") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected distinct GPU ids >= 0, got {text!r}")
    return ids


def contexts(ids: Sequence[int]) -> List[mx.Context]:
    """The contexts of GPU ``ids`` ([cpu()] for none).

    Raises
    ------
    CommandError
        When this MXNet build or machine has fewer GPUs than asked for (e.g. the CPU build).
    """
    if not ids:
        return [mx.cpu()]
    available = mx.context.num_gpus()
    missing = [i for i in ids if i >= available]
    if missing:
        raise CommandError(
            f"--gpus {','.join(map(str, ids))}: this machine has {available} GPU(s) visible to "
            "MXNet" + (" (the CPU build is installed: pip install 'gluon_ssdcl[gpu]')"
                       if not available else ""))
    return [mx.gpu(i) for i in ids]


def add_gpus_flag(parser: argparse.ArgumentParser) -> None:
    """``--gpus``: GPU ids such as '0,1'; empty (the default) for the CPU."""
    parser.add_argument('--gpus', type=gpu_ids, default=[],
                        help="GPU ids such as '0,1'; empty (default) runs on the CPU")


def add_loader_flags(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` (default 16) and ``-j/--num-workers`` (default 2)."""
    parser.add_argument('--batch-size', type=positive_int, default=16,
                        help='images per batch (default: 16)')
    parser.add_argument('-j', '--num-workers', type=nonnegative_int, default=2,
                        help='data loader worker processes; 0 loads in this process (default: 2)')


def add_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    """``--params`` or ``--pretrained``: the checkpoint a command reads (see
    ``checkpoint.load_model`` and :func:`checkpoint_path`)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--params',
                       help="checkpoint: either of its files (<stem>.params, <stem>.state), or "
                            "a run's save prefix (then its best); no default: give it or "
                            "--pretrained")
    group.add_argument('--pretrained', action='store_const', const=pretrained.DEFAULT_PRETRAINED,
                       help="instead of --params, the model shipped with the package "
                            f"({pretrained.DEFAULT_PRETRAINED}), copied to ~/.gluon_ssdcl/models "
                            "on first use (default: off)")


def checkpoint_path(args: argparse.Namespace) -> str:
    """The checkpoint of the flags of :func:`add_checkpoint_flag`: ``--params``, or the copy
    of the shipped one ``--pretrained`` names (a runtime failure when it is damaged)."""
    return args.params or pretrained.shipped_checkpoint(args.pretrained)


def add_knn_flag(parser: argparse.ArgumentParser) -> None:
    """``--knn-k``: neighbours of the k-NN classifier (default 5)."""
    parser.add_argument('--knn-k', type=positive_int, default=5,
                        help='neighbours of the k-NN classifier (default: 5)')


def run(body: Callable[[], int]) -> int:
    """``body()``; or, after one ``error: ...`` line on stderr, 2 for a :class:`UsageError` and
    1 for a runtime failure (:data:`RUNTIME_ERRORS`)."""
    try:
        return body()
    except RUNTIME_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1


def program(main: Callable[[], int]) -> None:
    """Run a command's ``main()`` as a program: log INFO to stderr (stdout keeps the command's
    results), exit with its code; Ctrl-C or SIGTERM exits 130 after one line
    (:func:`~gluon_ssdcl.commands.exit_on_interrupt`)."""
    with exit_on_interrupt():
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        sys.exit(main())


@contextlib.contextmanager
def log_to_file(path: str) -> Iterator[None]:
    """Also write the package's INFO messages to ``path`` while the block runs; the package
    logger's handlers and level are as before afterwards."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()

