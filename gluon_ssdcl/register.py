"""``python -m gluon_ssdcl.register``: the command ``gluon-ssdcl register``, kept under its
earlier name."""
from .commands import run_command

if __name__ == '__main__':
    run_command('register')
