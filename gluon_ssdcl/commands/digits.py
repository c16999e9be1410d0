"""``gluon-ssdcl digits``: generate (or reuse) the offline digits data set and print its size and
time (the set, its layout and its cache: :mod:`gluon_ssdcl.data.digitset`). Usage::

    gluon-ssdcl digits [--root DIR] [--num-train 7000] [--num-val 500] [--seed 0]
                       [--image-size 300] [--exclude-classes 8,9]

Ctrl-C stops the generation and removes its temporary folder (exit code 130).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional, Sequence

from ..data.digitset import (DEFAULT_NUM_TRAIN, MIN_IMAGE_SIZE, check_parameters, default_root,
                             ensure_digits)
from .common import (OneLineErrorParser, classes_flag, integer, nonnegative_int, positive_int,
                     program, run)

__all__ = ['build_parser', 'main']

MAX_IMAGE_SIZE = 4096  # pixels a side
MAX_DIGITS = 100  # per image

logger = logging.getLogger(__name__)


def _disk_usage(folder: str) -> int:
    """Bytes allocated on disk to the files under `folder`."""
    return sum(os.stat(os.path.join(directory, name)).st_blocks * 512
               for directory, _, names in os.walk(folder) for name in names)


def build_parser() -> OneLineErrorParser:
    """The flags of :func:`main`."""
    parser = OneLineErrorParser(prog='gluon-ssdcl digits',
                                description=__doc__.splitlines()[0])
    add = parser.add_argument
    add('--root', default=None, help=f'output folder (default: {default_root()} for the default '
                                     f'parameters, else a sibling named by them)')
    add('--num-train', type=positive_int, default=DEFAULT_NUM_TRAIN,
        help=f'training images (default: {DEFAULT_NUM_TRAIN})')
    add('--num-val', type=positive_int, default=500, help='validation images (default: 500)')
    add('--seed', type=nonnegative_int, default=0, help='random seed (default: 0)')
    add('--image-size', type=integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), default=300,
        help=f'image side in pixels, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} (default: 300)')
    add('--min-digits', type=integer(1, MAX_DIGITS), default=1,
        help='fewest digits per image (default: 1)')
    add('--max-digits', type=integer(1, MAX_DIGITS), default=6,
        help=f'most digits per image, at most {MAX_DIGITS} (default: 6)')
    add('--exclude-classes', type=classes_flag, default=[],
        help='digit classes left out of the training images, e.g. 8,9 (default: none)')
    add('--workers', type=positive_int, default=None,
        help='processes (default: the CPUs available)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: generate (or reuse) the digits data set and print its time and size.

    Returns
    -------
    int
        0 on success; 1 when ``--root`` holds something else or cannot be written (one
        ``error:`` line). Bad flags exit with 2 (one line).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_parameters(args.num_train, args.num_val, args.image_size, args.min_digits,
                          args.max_digits, args.exclude_classes)
    except ValueError as e:
        parser.error(str(e))

    def generate() -> int:
        start = time.perf_counter()
        root = ensure_digits(args.root, args.num_train, args.num_val, args.seed, args.image_size,
                             args.min_digits, args.max_digits,
                             exclude_classes=args.exclude_classes, workers=args.workers)
        print(f'digits data set at {root}: {args.num_train} train + {args.num_val} val images, '
              f'{_disk_usage(root) / 2 ** 20:.1f} MiB on disk, {time.perf_counter() - start:.1f} s')
        return 0
    return run(generate)


if __name__ == '__main__':
    program(main)
