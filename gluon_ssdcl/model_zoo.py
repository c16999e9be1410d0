"""``python -m gluon_ssdcl.model_zoo``: the command ``gluon-ssdcl models``, kept under its
earlier name."""
from .commands import run_command

if __name__ == '__main__':
    run_command('models')
