"""The command lines: ``gluon-ssdcl <command> [flags]``, one module per command.

Each command module has ``main(argv=None) -> exit code``, callable from Python (a notebook) as
well as from a shell; none imports another command. :func:`main` here dispatches
``gluon-ssdcl <command>`` (also ``python -m gluon_ssdcl <command>``) to them.
"""
import contextlib
import importlib
import os
import signal
import sys
import threading
from typing import Iterator, Optional, Sequence

__all__ = ['COMMANDS', 'INTERRUPTED', 'main', 'exit_on_interrupt', 'run_command']

INTERRUPTED = 130  # the exit code of a program ended by Ctrl-C (128 + SIGINT), as in a shell
_CATCHING = False  # whether an exit_on_interrupt block runs
_FORK_HOOKS = []  # what a process forked inside an exit_on_interrupt block runs first


def _after_fork_in_child():
    for hook in list(_FORK_HOOKS):
        hook()
    _FORK_HOOKS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)

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
    'checkpoint': ('checkpoint', 'convert 0.1 checkpoints, or write a slim one for inference'),
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


@contextlib.contextmanager
def exit_on_interrupt() -> Iterator[None]:
    """End the program with one ``error: interrupted`` line on stderr and exit code
    :data:`INTERRUPTED` when Ctrl-C (SIGINT) or SIGTERM interrupts the block, without a
    traceback. The block's ``finally`` clauses run first (temporary files are removed, locks
    released), then the temporaries of ``atomic_path`` blocks an interrupt left open
    (:func:`~gluon_ssdcl.utils.files.remove_open_temporaries`); further signals are ignored, and a
    signal during the exit that follows ends the process at once.

    A signal is caught only where it has its default handler (not where the caller set one or
    ignores it, as in a background job), and SIGTERM not in a worker of a distributed job
    (``DMLC_ROLE`` set), which its launcher stops with SIGTERM and which must then end at
    once rather than wait at ps-lite's final barrier. In a process forked from this one (a
    data-loader or generator worker) either signal has the system's default action. A signal
    that comes while a ``__del__`` runs (where Python would print the interrupt and drop it) is
    delivered again 50 ms later. Signal
    handlers can only be set in the main thread: elsewhere the block runs as it is, and so it
    does inside another such block, which handles the signals.
    """
    global _CATCHING  # pylint: disable=global-statement
    if _CATCHING or threading.current_thread() is not threading.main_thread():
        yield
        return
    def interrupt(signum, frame):
        if _in_finalizer(frame):  # raised there, the interrupt would be printed and dropped
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()  # again, later
            return
        for sig in caught:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    caught = {sig: signal.getsignal(sig) for sig, default in defaults.items()
              if signal.getsignal(sig) == default
              and not (sig == signal.SIGTERM and 'DMLC_ROLE' in os.environ)}
    for sig in caught:
        signal.signal(sig, interrupt)

    def default_in_child():
        # a forked worker must die of SIGTERM at once (multiprocessing's Pool.terminate waits
        # for it) and leave Ctrl-C to this process: set before the child runs anything
        for sig in caught:
            if signal.getsignal(sig) is interrupt:
                signal.signal(sig, signal.SIG_DFL)
    _FORK_HOOKS.append(default_in_child)
    _CATCHING = True
    try:
        yield
    except KeyboardInterrupt as why:
        for sig in caught:
            signal.signal(sig, signal.SIG_DFL)
        files = sys.modules.get('gluon_ssdcl.utils.files')  # not imported: nothing written
        if files is not None:
            files.remove_open_temporaries()
        print(f"error: interrupted ({why.args[0] if why.args else 'SIGINT'})", file=sys.stderr)
        sys.exit(INTERRUPTED)
    finally:
        _CATCHING = False
        _FORK_HOOKS.remove(default_in_child)
        for sig, previous in caught.items():
            if signal.getsignal(sig) is interrupt:
                signal.signal(sig, previous)


def _in_finalizer(frame) -> bool:
    """Whether ``frame`` runs inside a ``__del__`` method, where Python reports an exception as
    "Exception ignored" and goes on."""
    while frame is not None:
        if frame.f_code.co_name == '__del__':
            return True
        frame = frame.f_back
    return False


def run_command(name: Optional[str] = None) -> None:
    """Run ``gluon-ssdcl`` (or its command ``name``) as a program: logging to stderr, exit with
    its code (the console script and every ``python -m`` shim). Ctrl-C ends it with one line
    and exit code 130 (:func:`exit_on_interrupt`) from the start, while MXNet is imported too."""
    with exit_on_interrupt():
        from .common import program  # pylint: disable=import-outside-toplevel
        program(main if name is None else command_main(name))
