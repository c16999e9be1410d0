"""``python -m gluon_ssdcl.detect``: the command ``gluon-ssdcl detect``, kept under its
earlier name."""
from .commands import run_command

if __name__ == '__main__':
    run_command('detect')
