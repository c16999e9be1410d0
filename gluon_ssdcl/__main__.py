"""``python -m gluon_ssdcl <command> [flags]``: the same as ``gluon-ssdcl``."""
from .commands import run_command

run_command()
