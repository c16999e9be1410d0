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
from typing import Callable, Iterator, List, Sequence

import mxnet as mx

from ..data.digitset import parse_classes
from ..utils.errors import one_line

__all__ = ['CommandError', 'UsageError', 'OneLineErrorParser', 'positive_int', 'positive_float',
           'nonnegative_int', 'output_folder', 'gpu_ids', 'contexts', 'add_checkpoint_flag',
           'add_gpus_flag',
           'add_loader_flags', 'add_knn_flag', 'one_line', 'run', 'program', 'log_to_file',
           'RUNTIME_ERRORS']

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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (not NaN, not infinite)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


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
    """``--params``: the checkpoint a command reads (see ``checkpoint.load_model``)."""
    parser.add_argument('--params', required=True,
                        help="checkpoint: either of its files (<stem>.params, <stem>.state), or "
                             "a run's save prefix (then its best)")


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
    results), exit with its code."""
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

