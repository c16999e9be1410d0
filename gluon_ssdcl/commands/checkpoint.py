"""``gluon-ssdcl checkpoint``: rewrite checkpoints. ``--convert OLD.params...``: one-file
checkpoints of gluon_ssdcl 0.1 as weights + state
(:func:`~gluon_ssdcl.engine.checkpoint.convert_checkpoint`); ``--slim CHECKPOINT -o STEM``: a
checkpoint for inference, its weights in float16 and no trainer states
(:func:`~gluon_ssdcl.engine.checkpoint.slim_checkpoint`, how the shipped weights are made).
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

from ..engine.checkpoint import convert_checkpoint, slim_checkpoint
from .common import OneLineErrorParser, program, run

__all__ = ['build_parser', 'main']

logger = logging.getLogger(__name__)


def build_parser() -> OneLineErrorParser:
    """The flags of :func:`main`."""
    parser = OneLineErrorParser(prog='gluon-ssdcl checkpoint',
                                description='Convert one-file checkpoints of gluon_ssdcl 0.1, or '
                                            'write a slim copy of a checkpoint for inference.')
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--convert', nargs='+', metavar='OLD.params',
                      help='the checkpoints to convert; each gets <stem>.params and '
                           '<stem>.state beside it (default: none)')
    what.add_argument('--slim', metavar='CHECKPOINT',
                      help="a checkpoint (either file, or a run's prefix: its best) to copy with "
                           "its weights in float16 and without trainer states (needs -o; default: "
                           "none)")
    parser.add_argument('-o', '--output', metavar='STEM',
                        help='--slim: the new checkpoint is STEM.params and STEM.state (default: '
                             'none)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``--convert OLD.params...`` rewrites one-file checkpoints of gluon_ssdcl
    0.1 as weights + state, ``--slim CHECKPOINT -o STEM`` writes a slim copy; prints each new
    pair."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.slim) != bool(args.output):
        parser.error("-o/--output goes with --slim, and --slim needs it")

    def body() -> int:
        stems = [slim_checkpoint(args.slim, args.output)] if args.slim else \
            [convert_checkpoint(path) for path in args.convert]
        for stem in stems:
            print(f'{stem}.params {stem}.state')
        return 0
    return run(body)


if __name__ == '__main__':
    program(main)
