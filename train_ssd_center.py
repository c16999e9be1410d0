"""Train an SSD detector with a center-loss embedding head (see README.md)."""
import sys

from gluon_ssdcl.cli import main

if __name__ == '__main__':
    sys.exit(main())
