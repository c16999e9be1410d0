"""``python -m gluon_ssdcl.evaluate``: the command ``gluon-ssdcl evaluate``, kept under its
earlier name."""
from .commands import run_command

if __name__ == '__main__':
    run_command('evaluate')
