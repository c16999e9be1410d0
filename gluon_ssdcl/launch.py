"""``python -m gluon_ssdcl.launch``: the command ``gluon-ssdcl launch``, kept under its
earlier name."""
from .commands import run_command

if __name__ == '__main__':
    run_command('launch')
