"""Ctrl-C (SIGINT) and SIGTERM end a command with one line and exit code 130, never a traceback:
while MXNet is imported, mid-epoch, while the digits are generated; nothing half-written is
left behind."""
import glob
import os
import signal
import subprocess
import sys
import time

import mxnet as mx
import pytest

from gluon_ssdcl import CenterLoss
from gluon_ssdcl.data.digitset import ensure_digits
from gluon_ssdcl.engine.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='reads /proc (Linux)')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(ROOT, 'train_ssd_center.py')]
SCRIPT = os.path.join(os.path.dirname(sys.executable), 'gluon-ssdcl')
CONSOLE = [SCRIPT] if os.path.isfile(SCRIPT) else [sys.executable, '-m', 'gluon_ssdcl']
TINY = ['--network', 'tiny', '--data-shape', '64', '--digits-train', '64', '--digits-val', '16',
        '--batch-size', '8', '-j', '0', '--epochs', '1000']


def mapped(pid, library):
    """Whether process ``pid`` has loaded a shared library whose name holds ``library``."""
    try:
        with open(f'/proc/{pid}/maps') as f:
            return library in f.read()
    except OSError:
        return False


def holds(path, text):
    try:
        with open(path) as f:
            return text in f.read()
    except OSError:
        return False


def cases(tmp_path, digits_root):
    """(name, argv, signal, to its process group (a terminal's Ctrl-C), ready(pid) -> bool)."""
    def run(name):
        return TINY + ['--dataset-root', digits_root, '--save-prefix', str(tmp_path / name / 'run')]

    def training(name):
        return lambda pid: holds(tmp_path / name / 'run_train.log', '[Epoch 0]')

    def importing(pid):
        return mapped(pid, 'libmxnet')

    generating = lambda pid: bool(glob.glob(str(tmp_path / 'new' / 'digits.tmp-*' / 'VOC2007' /
                                                 'JPEGImages' / '*.jpg')))
    return [
        ('train, Ctrl-C mid-run', TRAIN + run('int'), signal.SIGINT, True, training('int')),
        ('train, SIGTERM mid-run', TRAIN + run('term'), signal.SIGTERM, False, training('term')),
        ('train, Ctrl-C while importing MXNet', TRAIN + run('imp'), signal.SIGINT, True,
         importing),
        ('gluon-ssdcl train, Ctrl-C while importing MXNet', CONSOLE + ['train'] + run('con'),
         signal.SIGINT, True, importing),
        ('gluon-ssdcl digits, Ctrl-C while generating', CONSOLE + [
            'digits', '--root', str(tmp_path / 'new' / 'digits'), '--num-train', '4000',
            '--num-val', '8', '--workers', '2'], signal.SIGINT, True, generating),
    ]


def test_an_interrupted_command_exits_130_with_one_line(tmp_path):
    """All cases at once (each a fresh process, its output in files), each signalled once it
    reaches its moment."""
    digits_root = ensure_digits(str(tmp_path / 'digits'), num_train=64, num_val=16,
                                progress=False)
    for name in ('int', 'term', 'imp', 'con', 'new'):
        (tmp_path / name).mkdir()
    env = dict(os.environ, OMP_NUM_THREADS='1', HOME=str(tmp_path))
    table = cases(tmp_path, digits_root)
    procs, logs = [], []
    for k, (_, argv, _, _, _) in enumerate(table):
        logs.append(open(tmp_path / f'stderr{k}', 'w+'))
        procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=logs[-1], start_new_session=True))
    try:
        waiting = set(range(len(table)))
        deadline = time.monotonic() + 300
        while waiting and time.monotonic() < deadline:
            for k in sorted(waiting):
                _, _, sig, group, ready = table[k]
                if procs[k].poll() is not None:
                    waiting.discard(k)
                elif ready(procs[k].pid):
                    (os.killpg if group else os.kill)(procs[k].pid, sig)
                    waiting.discard(k)
            time.sleep(0.02)
        for proc in procs:
            proc.wait(timeout=120)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    failures = []
    for (name, *_), proc, log in zip(table, procs, logs):
        log.seek(0)
        err = log.read()
        errors = [line for line in err.splitlines() if 'error' in line.lower()]
        if (proc.returncode != 130 or 'Traceback' in err or len(errors) != 1
                or not errors[0].startswith('error: interrupted')):
            failures.append(f'{name}: exit {proc.returncode}, stderr:\n{err[-1500:]}')
    assert not failures, '\n\n'.join(failures)
    for name in ('int', 'term', 'imp', 'con'):  # nothing half-written
        assert not glob.glob(str(tmp_path / name / '*.tmp')), os.listdir(tmp_path / name)
        for params in glob.glob(str(tmp_path / name / '*.params')):
            load_checkpoint(params)
    assert os.listdir(tmp_path / 'new') == ['digits.lock']


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, tiny_net, monkeypatch):
    center_loss = CenterLoss(3, 2)
    center_loss.initialize()
    meta = {'network': 'ssd_64_tiny_center_custom', 'classes': ['a', 'b', 'c'], 'embed_dim': 2,
            'epoch': 0}
    path = str(tmp_path / 'run_last.params')
    save_checkpoint(path, tiny_net, center_loss, meta)
    save = mx.nd.save

    def interrupted(target, data):  # Ctrl-C once the weights are written, before the state
        if target.endswith('.tmp') and '.state.' in target:
            raise KeyboardInterrupt
        save(target, data)
    monkeypatch.setattr(mx.nd, 'save', interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny_net, center_loss, {**meta, 'epoch': 1})
    assert sorted(os.listdir(tmp_path)) == ['run_last.params', 'run_last.state']
    assert load_checkpoint(path).meta['epoch'] == 0


def test_a_signal_during_a_finalizer_still_interrupts():
    """A signal whose handler would raise inside a ``__del__`` (where Python prints the error
    and drops it, as MXNet's CachedOp.__del__ did) still ends the block."""
    script = ("import os, signal, time\n"
              "from gluon_ssdcl.commands import exit_on_interrupt\n"
              "class Finalized:\n"
              "    def __del__(self):\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        time.sleep(0.05)\n"
              "with exit_on_interrupt():\n"
              "    Finalized()\n"
              "    time.sleep(3)\n"
              "    print('not interrupted')\n")
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 130 and 'not interrupted' not in proc.stdout
    assert proc.stderr.strip() == 'error: interrupted (SIGTERM)', proc.stderr


def test_an_interrupt_between_a_with_statement_and_its_block_leaves_no_temporary(tmp_path):
    """An interrupt can land where no ``finally`` of atomic_path runs: after its temporary file
    is made but before the ``with`` block starts (then its exit code never runs), or in
    contextlib's exit code before it. The interrupt's exit removes the temporaries still open,
    and the block's own clean-up, if it runs later, finds them gone."""
    script = ("import gc, sys\n"
              "from gluon_ssdcl.commands import exit_on_interrupt\n"
              "from gluon_ssdcl.utils.files import atomic_path\n"
              "def save():\n"
              "    opened = atomic_path(sys.argv[1])\n"
              "    opened.cycle = opened  # never collected: as in a large process, where the\n"
              "    gc.freeze()  # cycle outlives the modules its clean-up needs\n"
              "    tmp = opened.__enter__()  # the with statement's entry, then the interrupt\n"
              "    open(tmp, 'w').write('half')\n"
              "    raise KeyboardInterrupt('SIGINT')\n"
              "with exit_on_interrupt():\n"
              "    save()\n")
    target = tmp_path / 'results.json'
    proc = subprocess.run([sys.executable, '-c', script, str(target)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr.strip() == 'error: interrupted (SIGINT)', \
        proc.stderr
    assert os.listdir(tmp_path) == []
