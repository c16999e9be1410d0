"""Train an SSD detector with a center-loss embedding head (see README.md)."""
from gluon_ssdcl.cli import main
from gluon_ssdcl.cli_tools import program

if __name__ == '__main__':
    program(main)
