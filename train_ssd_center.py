"""Train an SSD detector with a center-loss embedding head: the same as ``gluon-ssdcl train``."""
from gluon_ssdcl.commands import run_command

if __name__ == '__main__':
    run_command('train')
