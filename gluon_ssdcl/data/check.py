"""``python -m gluon_ssdcl.data.check``: the command ``gluon-ssdcl check-data``, kept under its
earlier name."""
from ..commands import run_command

if __name__ == '__main__':
    run_command('check-data')
