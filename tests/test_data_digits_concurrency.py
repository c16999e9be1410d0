"""Tests of gluon_ssdcl.data.digits across processes: concurrent first uses, kill -9 mid-way."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gluon_ssdcl.data.digitset import ensure_digits

pytestmark = pytest.mark.skipif(os.name != 'posix', reason='the lock needs fcntl (POSIX)')

FIRST_USE = '''
import logging, os, sys, time
from gluon_ssdcl.data.voc_check import check_voc_folder
from gluon_ssdcl.data.digitset import ensure_digits
logging.basicConfig(level=logging.INFO, format='%(message)s')
root, ready, go = sys.argv[1:]
open(ready, 'w').close()
while not os.path.exists(go):  # both processes call ensure_digits at the same moment
    time.sleep(0.005)
root = ensure_digits(root, num_train=16, num_val=8, progress=False, workers=1)
errors = [p for p in check_voc_folder(os.path.join(root, 'VOC2007')) if p.severity == 'error']
print('\\n'.join(map(str, errors)))
sys.exit(1 if errors else 0)
'''

GENERATE = '''
import sys, time
from gluon_ssdcl.data import digitset as digits
render_image = digits.render_image

def slow_render_image(*args, **kwargs):  # 1 s an image, as large images on a slow machine
    time.sleep(1)
    return render_image(*args, **kwargs)

digits.render_image = slow_render_image  # before the pool forks: the workers inherit it
digits.ensure_digits(sys.argv[1], num_train=400, num_val=8, progress=False, workers=2)
'''


def wait_for(condition, timeout, step=0.05):
    """Poll `condition()` until it is true (returns True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rpartition(')')[2].split()
    except OSError:
        return None


def children(pid):
    """Pids of the live child processes of `pid`."""
    pids = [int(name) for name in os.listdir('/proc') if name.isdigit()]
    return [p for p in pids if (stat_fields(p) or [None, None])[1] == str(pid) and running(p)]


def running(pid):
    """True while process `pid` exists and is neither a zombie nor dead."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ('Z', 'X')


def ours(pid):
    """True when process `pid` runs GENERATE (not an unrelated process that reused the pid)."""
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return b'ensure_digits' in f.read()
    except OSError:
        return False


def count_files(folder):
    return sum(len(names) for _, _, names in os.walk(folder))


def test_two_concurrent_first_uses_both_succeed_and_generate_once(tmp_path):
    root = str(tmp_path / 'cache' / 'digits')  # its parent does not exist yet either
    go = str(tmp_path / 'go')
    ready = [str(tmp_path / f'ready{i}') for i in range(2)]
    procs = [subprocess.Popen([sys.executable, '-c', FIRST_USE, root, r, go],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in ready]
    try:
        assert wait_for(lambda: all(map(os.path.exists, ready)), 120)
        open(go, 'w').close()
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err
    logs = ''.join(err for _, err in outputs)
    assert logs.count('generating the digits data set') == 1, logs
    assert logs.count('reusing the digits data set') == 1, logs
    manifest = json.load(open(os.path.join(root, 'manifest.json')))
    assert (manifest['num_train'], manifest['num_val']) == (16, 8)
    assert len(os.listdir(os.path.join(root, 'VOC2007', 'JPEGImages'))) == 24
    assert len(os.listdir(os.path.join(root, 'VOC2007', 'Annotations'))) == 24
    assert sorted(os.listdir(tmp_path / 'cache')) == ['digits', 'digits.lock']


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='reads /proc (Linux)')
def test_kill_9_stops_the_workers_and_the_next_run_cleans_up(tmp_path):
    root = str(tmp_path / 'digits')
    proc = subprocess.Popen([sys.executable, '-c', GENERATE, root])
    workers = []
    try:
        jpegs = lambda: glob.glob(str(tmp_path / 'digits.tmp-*' / 'VOC2007' / 'JPEGImages' / '*'))
        assert wait_for(lambda: len(jpegs()) >= 2, 120), 'generation did not start'
        workers = children(proc.pid)
        assert workers, 'no pool workers found'
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # each worker took a chunk of 8 jobs (8 s): it must stop without finishing it
        assert wait_for(lambda: not any(map(running, workers)), 3), 'workers outlived the parent'
        (tmp,) = glob.glob(str(tmp_path / 'digits.tmp-*'))
        before = count_files(tmp)
        time.sleep(0.5)
        assert count_files(tmp) == before < 408
    finally:
        for pid in [proc.pid] + workers:
            if running(pid) and ours(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert ensure_digits(root, num_train=16, num_val=8, progress=False, workers=1) == root
    assert sorted(os.listdir(tmp_path)) == ['digits', 'digits.lock']
    assert len(os.listdir(os.path.join(root, 'VOC2007', 'JPEGImages'))) == 24
