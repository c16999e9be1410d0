"""``python -m gluon_ssdcl.export``: the command ``gluon-ssdcl export``, kept under its
earlier name."""
from .commands import run_command

if __name__ == '__main__':
    run_command('export')
