"""``gluon-ssdcl models``: print the registered model names, one a line.
"""
from __future__ import annotations

import logging

from ..model.zoo import list_models
from .common import OneLineErrorParser, program

__all__ = ['main']

logger = logging.getLogger(__name__)


def main(argv=None):
    """Command line: print the registered model names, one a line; returns 0."""
    OneLineErrorParser(prog='gluon-ssdcl models',
                       description='List the registered SSDCenter models.').parse_args(argv)
    print('\n'.join(list_models()))
    return 0


if __name__ == '__main__':
    program(main)
