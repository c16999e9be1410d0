"""``python -m gluon_ssdcl.checkpoint``: the command ``gluon-ssdcl checkpoint``, kept under its
earlier name."""
from .commands import run_command

if __name__ == '__main__':
    run_command('checkpoint')
