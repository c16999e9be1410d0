"""Checks of Pascal VOC-layout folders: every problem that would break or silently spoil training.

A VOC-layout folder holds ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` and
``ImageSets/Main/<split>.txt`` (one image id a line). Usage::

    gluon-ssdcl check-data --root DIR [--split train val] [--classes cat,dog]

``DIR`` is that folder or its parent holding ``VOC2007/`` (the folder given to
``gluon-ssdcl digits --root``). Prints one line per problem,
``path: severity: message``, and exits with 1 when there are errors or ``DIR`` is neither.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

from ..data.voc_check import ERROR, SUBFOLDER, check_voc_folder, resolve_voc_root
from .common import OneLineErrorParser, class_names, program, run

__all__ = ['build_parser', 'main']

logger = logging.getLogger(__name__)


def build_parser() -> OneLineErrorParser:
    """The flags of :func:`main`."""
    parser = OneLineErrorParser(prog='gluon-ssdcl check-data',
                                description=__doc__.splitlines()[0])
    parser.add_argument('--root', required=True,
                        help='folder holding JPEGImages/, Annotations/ and ImageSets/Main/, '
                             f'or its parent holding {SUBFOLDER}/ (required)')
    parser.add_argument('--split', nargs='+', default=['train', 'val'],
                        help='ImageSets/Main/<split>.txt files to check (default: train val)')
    parser.add_argument('--classes', type=class_names, default=None,
                        help='comma-separated distinct class names; objects of other classes '
                             'are errors (default: any class)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: print the problems of a VOC-layout folder.

    Returns
    -------
    int
        0 without errors; 1 on errors, or when ``--root`` is not a VOC-layout folder nor its
        parent (one ``error:`` line). Bad flags exit with 2 (one line).
    """
    args = build_parser().parse_args(argv)

    def check() -> int:
        root = resolve_voc_root(args.root)
        problems = check_voc_folder(root, args.split, args.classes)
        for problem in problems:
            print(problem)
        errors = sum(p.severity == ERROR for p in problems)
        print(f'{errors} error(s), {len(problems) - errors} warning(s) in {root}')
        return 1 if errors else 0
    return run(check)


if __name__ == '__main__':
    program(main)
