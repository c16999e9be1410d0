"""``python -m gluon_ssdcl.launch``: start a data-parallel job on MXNet's parameter server.

    python -m gluon_ssdcl.launch -n WORKERS [-s SERVERS] [-H HOSTFILE] [--port P] -- COMMAND...

A launcher, not an engine: it starts ps-lite's scheduler and servers (``python -c 'import
mxnet'``, which serves when ``DMLC_ROLE`` says so) and WORKERS copies of COMMAND, with MXNet's
``DMLC_*`` environment (``DMLC_TASK_ID``: the index of a worker, as MXNet's own launcher sets it,
which :class:`gluon_ssdcl.engine.distributed.Workers` takes as its rank). Everything runs on this
machine, or, with a hostfile, the servers and workers go round-robin over its hosts through
``ssh`` (the scheduler stays here; the hosts must see the working folder and this Python at the
same paths). Each output line is prefixed with its process's role and index (``[worker 1]``).

When a process fails (a worker exits non-zero or is killed; a server or the scheduler ends
before the workers) the launcher stops the others and exits 1 with one line naming it; on
Ctrl-C (or SIGTERM) it stops them all and exits 130. Each process runs in its own process
group, and the whole group is stopped (SIGTERM, then SIGKILL after 5 s), so nothing of the job
is left behind, data-loader processes included. Bad usage exits 2 with one line.

The job also ends with the launcher when it is killed (kill -9 included): its processes get
SIGTERM when it dies (Linux's parent-death signal), and a watchdog process stops their groups
when its pipe from the launcher closes. On a host, each process runs under the same guard
(:data:`GUARD`), which stops its group when its stdin, carried by ssh, ends: when the launcher
ends or the connection drops.
"""
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, TextIO

from .common import OneLineErrorParser, UsageError, integer, positive_int, program, run

__all__ = ['Host', 'Node', 'GUARD', 'read_hostfile', 'free_port', 'plan', 'ssh_command', 'Job',
           'build_parser', 'main']

SERVE = 'import mxnet'  # with DMLC_ROLE=server or scheduler, importing MXNet runs its loop
STOP_GRACE_S = 5.0
POLL_S = 0.1
# defaults for every process of the job: lines as they come, no progress bars
QUIET = {'PYTHONUNBUFFERED': '1', 'TQDM_DISABLE': '1'}
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends

# ``python -c GUARD [COMMAND...]`` stops process groups (SIGTERM, then SIGKILL after
# STOP_GRACE_S) when its stdin ends, as it does when the process holding the pipe's other end
# ends, however it ends, or when the ssh connection carrying it drops; and when it gets SIGTERM,
# SIGHUP or SIGINT. The groups: COMMAND's, started in a group of its own (a process of the job
# on a host), whose exit code it exits with (128 + N after signal N); and each group id
# written to stdin, one a line (the launcher's watchdog). A line 'done' ends it, stopping none.
GUARD = f'''
import os, signal, subprocess, sys, threading, time
groups = []
def alive(group):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
def stop(*_):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in [g for g in groups if alive(g)]:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + {STOP_GRACE_S}
        while any(map(alive, groups)) and time.monotonic() < deadline:
            time.sleep({POLL_S})
    os._exit(1)
def watch():
    for line in sys.stdin:
        if line.strip() == 'done':
            os._exit(0)
        groups.append(int(line))
    stop()
for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(sig, stop)
if len(sys.argv) > 1:
    command = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, start_new_session=True)
    groups.append(command.pid)
    threading.Thread(target=watch, daemon=True).start()
    code = command.wait()
    sys.exit(128 - code if code < 0 else code)
watch()
'''


class Host(NamedTuple):
    """A hostfile entry: ssh's destination (``[user@]host``) and port (None: ssh's default)."""
    name: str
    port: Optional[int] = None


class Node(NamedTuple):
    """One process of the job: ``role`` ('scheduler', 'server', 'worker'), its index, its host
    (None: this machine), the command that starts it here, and its ``DMLC_*`` environment."""
    role: str
    index: int
    host: Optional[Host]
    argv: List[str]
    env: Dict[str, str]

    @property
    def label(self) -> str:
        return self.role if self.role == 'scheduler' else f'{self.role} {self.index}'


def read_hostfile(path: str) -> List[Host]:
    """The hosts of a hostfile: one ``[user@]host[:ssh_port]`` a line; blank lines and ``#``
    comments are skipped.

    Raises
    ------
    UsageError
        Naming the file and line of an entry that is not one, or a file without hosts.
    """
    hosts = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            entry = line.split('#', 1)[0].strip()
            if not entry:
                continue
            name, _, port = entry.partition(':')
            if not name or ' ' in entry or '\t' in entry or (port and not port.isdigit()):
                raise UsageError(f"-H {path}, line {number}: {entry!r} is not "
                                 "[user@]host[:ssh_port]")
            hosts.append(Host(name, int(port) if port else None))
    if not hosts:
        raise UsageError(f"-H {path} names no host")
    return hosts


def free_port() -> int:
    """A TCP port free on this machine now (the system's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(('', 0))
        return probe.getsockname()[1]


def _address_towards(host: Host) -> str:
    """This machine's IP address on the route to ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host.name.rpartition('@')[2], host.port or 22))
        return probe.getsockname()[0]


def ssh_command(host: Host, env: Dict[str, str], argv: Sequence[str], cwd: str,
                python: str = sys.executable) -> List[str]:
    """The local command that runs ``argv`` on ``host`` in folder ``cwd`` with ``env``.

    ``argv`` runs under ``python -c`` :data:`GUARD`, which stops its process group when its
    stdin ends: give the ssh client a pipe that stays open while the job runs, so that the
    remote processes end when the launcher ends or the connection drops. ``BatchMode`` fails
    at once instead of asking for a password.
    """
    settings = ' '.join(f'{key}={shlex.quote(value)}' for key, value in sorted(env.items()))
    guarded = [python, '-c', GUARD, *argv]
    remote = f"cd {shlex.quote(cwd)} && exec env {settings} {shlex.join(guarded)}"
    port = ['-p', str(host.port)] if host.port else []
    return ['ssh', '-o', 'BatchMode=yes', *port, host.name, remote]


def plan(command: Sequence[str], workers: int, servers: int, port: int,
         hosts: Optional[Sequence[Host]] = None, python: str = sys.executable,
         cwd: Optional[str] = None) -> List[Node]:
    """The job's processes: the scheduler (here), ``servers`` servers and ``workers`` workers,
    here or round-robin over ``hosts``."""
    cwd = cwd or os.getcwd()
    root = _address_towards(hosts[0]) if hosts else '127.0.0.1'
    common = {'DMLC_PS_ROOT_URI': root, 'DMLC_PS_ROOT_PORT': str(port),
              'DMLC_NUM_SERVER': str(servers), 'DMLC_NUM_WORKER': str(workers)}
    nodes = [Node('scheduler', 0, None, [python, '-c', SERVE], {**common,
                                                                 'DMLC_ROLE': 'scheduler'})]
    for role, count, argv in (('server', servers, [python, '-c', SERVE]),
                              ('worker', workers, list(command))):
        for index in range(count):
            host = hosts[index % len(hosts)] if hosts else None
            env = {**common, 'DMLC_ROLE': role, 'DMLC_TASK_ID': str(index)}
            if host is None:  # every process of a local job on the loopback interface
                env['DMLC_NODE_HOST'] = '127.0.0.1'
            node_argv = (argv if host is None else
                         ssh_command(host, {**QUIET, **env}, argv, cwd, python))
            nodes.append(Node(role, index, host, node_argv, env))
    return nodes


def _describe_end(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = 'an unknown signal'
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP reached the launcher."""


def _parent_death_signal() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that has the child get SIGTERM when this process's thread that starts
    it ends, however it ends (Linux's ``prctl(PR_SET_PDEATHSIG)``; None elsewhere)."""
    if not sys.platform.startswith('linux'):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # the C library, loaded before the fork
    parent = os.getpid()

    def set_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM))
        if os.getppid() != parent:  # the launcher ended before prctl
            os.kill(os.getpid(), signal.SIGTERM)
    return set_signal


class Job:
    """The running processes of a :func:`plan`, their prefixed output and their end.

    Call :meth:`start` in the thread that will wait for the job: its processes are sent SIGTERM
    when that thread ends (on Linux).
    """

    def __init__(self, nodes: Sequence[Node], out: TextIO = sys.stdout, err: TextIO = sys.stderr):
        self.nodes, self.out, self.err = list(nodes), out, err
        self.procs: List[subprocess.Popen] = []
        self.readers: List[threading.Thread] = []
        self.lock = threading.Lock()
        self.watchdog: Optional[subprocess.Popen] = None

    def start(self) -> None:
        """Start the watchdog (:data:`GUARD`) and every node in a process group of its own,
        each group given to the watchdog; then copy each node's output, prefixed."""
        preexec = _parent_death_signal()
        self.watchdog = subprocess.Popen([sys.executable, '-c', GUARD], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, start_new_session=True,
                                         text=True)
        for node in self.nodes:
            env = {**QUIET, **os.environ, **node.env} if node.host is None else None
            # over ssh, a pipe that closes with the launcher (GUARD stops the remote group)
            stdin = subprocess.DEVNULL if node.host is None else subprocess.PIPE
            self.procs.append(subprocess.Popen(
                node.argv, env=env, stdin=stdin, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec))
            self._tell_watchdog(f'{self.procs[-1].pid}\n')
        for node, proc in zip(self.nodes, self.procs):
            for stream, sink in ((proc.stdout, self.out), (proc.stderr, self.err)):
                reader = threading.Thread(target=self._copy, args=(node.label, stream, sink),
                                          daemon=True)
                reader.start()
                self.readers.append(reader)

    def _tell_watchdog(self, line: str) -> None:
        """Write ``line`` to the watchdog's stdin (see :data:`GUARD`)."""
        try:
            self.watchdog.stdin.write(line)
            self.watchdog.stdin.flush()
        except OSError:  # it ended (killed): the parent-death signal still ends the job
            pass

    def _copy(self, label: str, stream, sink: TextIO) -> None:
        for raw in iter(stream.readline, b''):
            parts = [p for p in raw.decode(errors='replace').rstrip('\r\n').split('\r') if p]
            if parts:  # a line redrawn with carriage returns: its last state
                with self.lock:
                    sink.write(f'[{label}] {parts[-1]}\n')
                    sink.flush()
        stream.close()

    def wait(self) -> Optional[str]:
        """Wait until every worker has ended: None when all exited 0, else which process
        failed first (a process that did not exit 0; of the servers and the scheduler, only
        while workers run: they are stopped after them anyway). Then give the servers and the
        scheduler ``STOP_GRACE_S`` to end by themselves (they do once the workers are gone)."""
        while True:
            codes = [proc.poll() for proc in self.procs]
            workers_running = any(code is None for node, code in zip(self.nodes, codes)
                                  if node.role == 'worker')
            for node, proc, code in zip(self.nodes, self.procs, codes):
                if code and (node.role == 'worker' or workers_running):
                    where = f" on {node.host.name} (ssh pid" if node.host else " (pid"
                    return f"{node.label}{where} {proc.pid}) {_describe_end(code)}"
            if not workers_running:
                break
            time.sleep(POLL_S)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(proc.poll() is None for proc in self.procs) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return None

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """End every process group still alive: SIGTERM, then SIGKILL after ``grace`` seconds;
        returns how many processes were still running."""
        running = sum(proc.poll() is None for proc in self.procs)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            groups = [proc.pid for proc in self.procs if _group_alive(proc.pid)]
            for group in groups:
                _signal_group(group, sig)
            deadline = time.monotonic() + wait
            while any(_group_alive(group) for group in groups) and time.monotonic() < deadline:
                for proc in self.procs:
                    proc.poll()
                time.sleep(POLL_S)
        for proc in self.procs:
            proc.wait()
            if proc.stdin:
                proc.stdin.close()
        for reader in self.readers:
            reader.join(timeout=grace)
        if self.watchdog is not None and self.watchdog.poll() is None:
            self._tell_watchdog('done\n')
            self.watchdog.stdin.close()
            self.watchdog.wait()
        return running


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


class _Signals:
    """While active, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (SIGINT too, since a
    process started in the background by a shell inherits it ignored, and Python then sets no
    KeyboardInterrupt handler); the previous handlers come back afterwards. A no-op outside the
    main thread, where Python cannot set handlers."""

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self.previous[sig] = signal.signal(sig, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def build_parser() -> OneLineErrorParser:
    """The launcher's flags (COMMAND, after ``--``, is split off before parsing)."""
    p = OneLineErrorParser(
        prog='gluon-ssdcl launch', allow_abbrev=False,
        usage='python -m gluon_ssdcl.launch -n WORKERS [-s SERVERS] [-H HOSTFILE] [--port P] '
              '-- COMMAND...',
        description="Start MXNet's scheduler, servers and COMMAND as workers (DMLC_* "
                    "environment), here or over ssh; stop them all when one fails.")
    p.add_argument('-n', '--num-workers', type=positive_int, required=True,
                   help='workers: copies of COMMAND (required)')
    p.add_argument('-s', '--num-servers', type=positive_int, default=None,
                   help='servers (default: as many as workers, as MXNet\'s launcher)')
    p.add_argument('-H', '--hostfile', default=None,
                   help='hosts to run the servers and workers on over ssh, one '
                        '[user@]host[:ssh_port] a line (default: all on this machine)')
    p.add_argument('--port', type=integer(1, 65535), default=None,
                   help="the scheduler's TCP port (default: a free one)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the launcher; returns 0 when every worker exited 0, 1 after one ``error:`` line
    naming the process that failed, 130 when interrupted, 2 for bad usage."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index('--') if '--' in argv else len(argv)
    parser = build_parser()
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("no COMMAND: give the workers' command after --")
    if args.hostfile is not None and not os.path.isfile(args.hostfile):
        parser.error(f"-H: no such file {args.hostfile}")

    def launch() -> int:
        hosts = read_hostfile(args.hostfile) if args.hostfile else None
        nodes = plan(command, args.num_workers, args.num_servers or args.num_workers,
                     args.port or free_port(), hosts)
        job = Job(nodes)
        with _Signals():
            try:
                job.start()
                failed = job.wait()
            except (KeyboardInterrupt, Interrupted) as why:
                print(f"error: interrupted ({why or 'SIGINT'}): stopped the job's "
                      f"{job.stop()} running processes", file=sys.stderr)
                return 130
            finally:
                stopped = job.stop()
        if failed:
            print(f"error: {failed}: stopped the job's other {stopped} running processes",
                  file=sys.stderr)
            return 1
        return 0
    return run(launch)


if __name__ == '__main__':
    program(main)
