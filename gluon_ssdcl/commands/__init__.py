"""The command lines: ``gluon-ssdcl <command> [flags]``, one module per command.

Each command module has ``main(argv=None) -> exit code``, callable from Python (a notebook) as
well as from a shell; none imports another command. :func:`main` here dispatches
``gluon-ssdcl <command>`` (also ``python -m gluon_ssdcl <command>``) to them.
"""
import importlib
import sys
from typing import Optional, Sequence

__all__ = ['COMMANDS', 'main', 'run_command']

# command name: (module, one line of help)
COMMANDS = {
    'train': ('train', 'train an SSD detector with the center loss (= python train_ssd_center.py)'),
    'evaluate': ('evaluate', "a checkpoint's mAP and softmax / k-NN / nearest-center accuracy"),
    'detect': ('detect', 'draw the detections of a checkpoint on images'),
    'export': ('export', 'export a checkpoint for MXNet, C++ or onnxruntime'),
    'register': ('register', 'register a new class from a few example boxes'),
    'launch': ('launch', "start a distributed job on MXNet's parameter server"),
    'digits': ('digits', 'generate the offline digits data set'),
    'check-data': ('check_data', 'check a VOC-layout data set folder'),
    'models': ('models', 'list the registered model names'),
    'checkpoint': ('checkpoint', 'convert one-file checkpoints of gluon_ssdcl 0.1'),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ['usage: gluon-ssdcl <command> [flags]   (gluon-ssdcl <command> --help for its flags)',
             '', 'commands:']
    lines += [f'  {name:<{width}}  {text}' for name, (_, text) in COMMANDS.items()]
    return '\n'.join(lines)


def command_main(name: str):
    """The ``main(argv)`` of command ``name`` (a key of :data:`COMMANDS`)."""
    return importlib.import_module(f'{__name__}.{COMMANDS[name][0]}').main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``gluon-ssdcl <command> [flags]``: run one command; returns its exit code (2 for an
    unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == '--version':
        from .. import __version__  # pylint: disable=import-outside-toplevel
        print(f'gluon-ssdcl {__version__}')
        return 0
    if argv[0] not in COMMANDS:
        print(f"gluon-ssdcl: error: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return command_main(argv[0])(argv[1:])


def run_command(name: Optional[str] = None) -> None:
    """Run ``gluon-ssdcl`` (or its command ``name``) as a program: logging to stderr, exit with
    its code (the console script and every ``python -m`` shim)."""
    from .common import program  # pylint: disable=import-outside-toplevel
    program(main if name is None else command_main(name))
