"""``gluon-ssdcl models``: print the registered model names, one a line.
"""
from __future__ import annotations

import logging

from ..model.zoo import list_models
from .common import OneLineErrorParser, program

__all__ = ['build_parser', 'main']

logger = logging.getLogger(__name__)


def build_parser() -> OneLineErrorParser:
    """The flags of :func:`main` (none but ``--help``)."""
    return OneLineErrorParser(prog='gluon-ssdcl models',
                              description='List the registered SSDCenter models.')


def main(argv=None):
    """Command line: print the registered model names, one a line; returns 0."""
    build_parser().parse_args(argv)
    print('\n'.join(list_models()))
    return 0


if __name__ == '__main__':
    program(main)
