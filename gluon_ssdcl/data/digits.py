"""``python -m gluon_ssdcl.data.digits``: the command ``gluon-ssdcl digits``, kept under its
earlier name."""
from ..commands import run_command

if __name__ == '__main__':
    run_command('digits')
