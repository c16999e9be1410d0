"""``gluon-ssdcl checkpoint --convert OLD.params...``: rewrite one-file checkpoints of
gluon_ssdcl 0.1 as weights + state (:func:`~gluon_ssdcl.engine.checkpoint.convert_checkpoint`).
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

from ..engine.checkpoint import convert_checkpoint
from .common import OneLineErrorParser, program, run

__all__ = ['build_parser', 'main']

logger = logging.getLogger(__name__)


def build_parser() -> OneLineErrorParser:
    """The flags of :func:`main`."""
    parser = OneLineErrorParser(prog='gluon-ssdcl checkpoint',
                                description='Convert one-file checkpoints of gluon_ssdcl 0.1.')
    parser.add_argument('--convert', nargs='+', required=True, metavar='OLD.params',
                        help='the checkpoints to convert; each gets <stem>.params and '
                             '<stem>.state beside it (required)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``--convert OLD.params...`` rewrites one-file checkpoints of gluon_ssdcl
    0.1 as weights + state; prints each new pair."""
    args = build_parser().parse_args(argv)

    def convert() -> int:
        for path in args.convert:
            stem = convert_checkpoint(path)
            print(f'{stem}.params {stem}.state')
        return 0
    return run(convert)


if __name__ == '__main__':
    program(main)
