"""Data-parallel training on MXNet's parameter server: jobs of a scheduler, 1 server and 2
workers on this machine (``python -m gluon_ssdcl.launch``, free ports), the tiny network."""
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time

import mxnet as mx
import numpy as np
import pytest

from gluon_ssdcl.commands.launch import GUARD, Host, free_port
from gluon_ssdcl.commands.launch import main as launch_main
from gluon_ssdcl.commands.launch import plan, read_hostfile, ssh_command
from gluon_ssdcl.data.sampler import ShardSampler

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
WORKER = os.path.join(TESTS, 'dist_worker.py')
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)


def launch(*command, workers=2, **kwargs):
    """Start ``launch -n workers -s 1 -- python COMMAND`` (a free port)."""
    return subprocess.Popen(
        [sys.executable, '-m', 'gluon_ssdcl.launch', '-n', str(workers), '-s', '1', '--',
         sys.executable, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env=ENV, **kwargs)


def finished(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# ------------------------------------------------------------------ shards, hostfile, plan

def test_shards_are_the_parts_of_one_process_batches():
    length, batch = 23, 3
    np.random.seed(5)
    alone = [list(b) for b in mx.gluon.data.BatchSampler(
        mx.gluon.data.RandomSampler(length), batch, 'discard')]
    np.random.seed(5)
    assert list(ShardSampler(length, batch)) == alone  # one worker: gluon's shuffled batches
    np.random.seed(5)
    whole = list(ShardSampler(length, 3 * batch))
    shards = []
    for rank in range(3):
        np.random.seed(5)
        shards.append(list(ShardSampler(length, batch, rank, 3)))
    assert [len(s) for s in shards] == [len(whole)] * 3 == [length // (3 * batch)] * 3
    for step, together in enumerate(whole):
        assert sum((s[step] for s in shards), []) == together
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen))
    np.random.seed(6)
    assert list(ShardSampler(length, batch, 1, 3)) != shards[1]  # another epoch, another order


def test_hostfile_entries_and_the_ssh_command(tmp_path):
    hostfile = tmp_path / 'hosts'
    hostfile.write_text('# the cluster\nnode1\n\n  alice@node2:2222  # gpu box\n10.0.0.7\n')
    hosts = read_hostfile(str(hostfile))
    assert hosts == [Host('node1'), Host('alice@node2', 2222), Host('10.0.0.7')]
    command = ssh_command(hosts[1], {'DMLC_ROLE': 'worker', 'X': 'a b'},
                          ['python', 'train.py', '--save-prefix', "it's"], '/shared/my run',
                          python='/opt/py')
    assert command[:5] == ['ssh', '-o', 'BatchMode=yes', '-p', '2222']
    assert command[5] == 'alice@node2' and len(command) == 7
    assert shlex.split(command[6]) == [
        'cd', '/shared/my run', '&&', 'exec', 'env', 'DMLC_ROLE=worker', 'X=a b', '/opt/py', '-c',
        GUARD, 'python', 'train.py', '--save-prefix', "it's"]
    bad = tmp_path / 'bad'
    bad.write_text('node1\nnode2:ssh\n')
    with pytest.raises(ValueError, match='line 2'):
        read_hostfile(str(bad))


def test_plan_starts_a_scheduler_servers_and_workers_round_robin():
    local = plan(['python', 'w.py'], workers=2, servers=1, port=9000)
    assert [n.label for n in local] == ['scheduler', 'server 0', 'worker 0', 'worker 1']
    assert all(n.host is None and n.env['DMLC_PS_ROOT_URI'] == '127.0.0.1' for n in local)
    assert local[3].argv == ['python', 'w.py'] and local[3].env['DMLC_TASK_ID'] == '1'
    assert {n.env['DMLC_ROLE'] for n in local} == {'scheduler', 'server', 'worker'}
    assert all(n.env['DMLC_PS_ROOT_PORT'] == '9000' and n.env['DMLC_NUM_WORKER'] == '2'
               and n.env['DMLC_NUM_SERVER'] == '1' for n in local)
    hosts = [Host('127.0.0.2'), Host('127.0.0.3')]
    remote = plan(['python', 'w.py'], workers=3, servers=2, port=9000, hosts=hosts, cwd='/s')
    assert [n.host and n.host.name for n in remote] == [
        None, '127.0.0.2', '127.0.0.3', '127.0.0.2', '127.0.0.3', '127.0.0.2']
    assert remote[0].argv[0] == sys.executable  # the scheduler runs here
    assert remote[5].argv[0] == 'ssh' and 'DMLC_TASK_ID=2' in remote[5].argv[-1]
    assert 'DMLC_NODE_HOST' not in remote[5].env


@pytest.mark.parametrize('argv, reason', [
    (['-n', '2'], 'no COMMAND'),
    (['-n', '2', '--'], 'no COMMAND'),
    (['-n', '0', '--', 'python'], 'argument -n/--num-workers: must be a positive integer'),
    (['--', 'python'], 'the following arguments are required: -n'),
    (['-n', '1', '-H', 'no/such/hostfile', '--', 'python'], '-H: no such file'),
])
def test_bad_usage_exits_2_with_one_line(capsys, argv, reason):
    with pytest.raises(SystemExit) as stop:
        launch_main(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], lines


# ------------------------------------------------------------------------------- jobs

@pytest.fixture(scope='module')
def step_job(tmp_path_factory):
    """One job of one step in each mode (dist_worker.py step), running while the tests compute
    their references; ``finish()`` waits for it."""
    folder = tmp_path_factory.mktemp('step')
    job = launch(WORKER, 'step', str(folder))
    ended = []

    def finish():
        if not ended:
            ended.append(finished(job))
        code, _, err = ended[0]
        assert code == 0, err[-3000:]
        return folder
    yield finish
    if job.poll() is None:
        job.kill()


@pytest.mark.parametrize('mode', ['softmax', 'softmax-center', 'center'])
def test_one_step_of_two_workers_equals_one_process_with_the_whole_batch(tmp_path, step_job,
                                                                         mode):
    """2 workers with 4 images each against one process with the 8 images on two devices
    (BatchNorm normalises per device in both, as with --gpus 0,1)."""
    sys.path.insert(0, TESTS)
    from dist_worker import STEP_IMAGES, parameters, step_config, toy_run

    from gluon_ssdcl.engine.train import fit
    ctx = [mx.cpu(0), mx.cpu(1)]
    net, loss_fn, loader = toy_run(mode, ctx, STEP_IMAGES)
    before = parameters(net, loss_fn.center_loss)
    fit(net, loss_fn, loader, ctx, step_config(mode, str(tmp_path / 'alone')))
    want = parameters(net, loss_fn.center_loss)
    folder = step_job()
    ranks = [np.load(folder / f'{mode}_rank{r}.npz') for r in (0, 1)]
    assert sorted(ranks[0].files) == sorted(ranks[1].files) == sorted(want)
    for name, value in want.items():
        np.testing.assert_array_equal(ranks[1][name], ranks[0][name], err_msg=name)
        np.testing.assert_allclose(ranks[0][name], value, rtol=1e-5, atol=1e-5, err_msg=name)
    moved = {name: np.abs(want[name] - before[name]).max() for name in want}
    centers = [name for name in want if name.startswith('centers')]
    assert min(moved['features.stem.0.0.weight'], moved['box_predictors.0.predictor.weight'],
               moved['features.stem.0.1.running_mean']) > 1e-3
    assert (min(moved[c] for c in centers) > 1e-3) == (mode == 'softmax-center')
    class_head = [name for name in want if name.startswith('class_predictors')]
    assert (max(moved[name] for name in class_head) > 0) == (mode != 'center')


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    from gluon_ssdcl.data.digitset import ensure_digits
    return ensure_digits(str(tmp_path_factory.mktemp('digits')), num_train=16, num_val=8,
                         progress=False)


def equal_workers(folder):
    """Rank 0's parameters after training, once checked equal to rank 1's."""
    ranks = [dict(np.load(os.path.join(folder, f'rank{r}.npz'))) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for name, value in ranks[0].items():
        np.testing.assert_array_equal(ranks[1][name], value, err_msg=name)
    return ranks[0]


def test_a_two_epoch_run_through_launch_then_resumed(tmp_path, digits_root):
    from gluon_ssdcl.engine.checkpoint import load_checkpoint, load_model
    from gluon_ssdcl.engine.train import make_lr_scheduler
    prefix = tmp_path / 'runs' / 'dist'
    code, out, err = finished(launch(
        WORKER, 'cli', str(tmp_path), '--kvstore', 'dist_sync', '--network', 'tiny',
        '--data-shape', '64', '--dataset-root', digits_root, '--digits-train', '16',
        '--digits-val', '8', '--epochs', '2', '--batch-size', '4', '-j', '0', '--embed-dim',
        '2', '--lr', '0.01', '--warmup-iters', '1', '--knn-k', '3', '--center-loss',
        '--plotting', '--plot-images', '4', '--save-prefix', str(prefix)))
    assert code == 0, err[-3000:]
    trained = equal_workers(tmp_path)
    written = sorted(os.listdir(prefix.parent))
    assert written == sorted(
        ['dist_history.png', 'dist_train.log', 'dist_eval.json'] +
        [f'dist_{stem}.{ext}' for stem in ('last', 'best') for ext in ('params', 'state')] +
        [f'dist_features_{split}{end}' for split in ('train', 'val')
         for end in ('_epoch0.png', '_epoch1.png', '.gif')] + ['dist_features_val_tsne.png'])
    model = load_model(str(prefix))
    last = load_checkpoint(f'{prefix}_last.params')
    for name, value in last.net_params.items():
        np.testing.assert_array_equal(value.asnumpy(), trained[name], err_msg=name)
    np.testing.assert_array_equal(model.centers.asnumpy().shape, (10, 2))
    assert last.meta['flags']['kvstore'] == 'dist_sync'
    schedule = make_lr_scheduler(0.01, 2, 16 // (2 * 4), warmup_iters=1)  # global steps
    assert [r['lr'] for r in last.meta['history']] == pytest.approx([schedule(2), schedule(4)])
    assert schedule(2) > 0
    with open(f'{prefix}_train.log') as f:
        epochs = [line for line in f if '[Epoch' in line]
    assert [re.search(r'\[Epoch (\d)\]', line).group(1) for line in epochs] == ['0', '1']
    table = [line for line in out.splitlines() if 'softmax acc' in line]
    assert len(table) == 1 and table[0].startswith('[worker 0] ')  # rank 0's results alone

    # every worker restores rank 0's files, and they train on equal (MXNet's other store)
    code, out, err = finished(launch(WORKER, 'cli', str(tmp_path), '--kvstore',
                                     'dist_device_sync', '--resume', str(prefix), '--epochs', '3'))
    assert code == 0, err[-3000:]
    resumed = equal_workers(tmp_path)
    assert any(np.abs(resumed[name] - trained[name]).max() > 0 for name in trained)
    last = load_checkpoint(f'{prefix}_last.params')
    assert last.meta['epoch'] == 2 and [r['epoch'] for r in last.meta['history']] == [0, 1, 2]
    with open(f'{prefix}_train.log') as f:
        assert [line.count('[Epoch 2]') for line in f if '[Epoch' in line] == [0, 0, 1]


def children(pid):
    """The pids whose parent is ``pid``."""
    found = []
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/stat') as f:
                if entry.isdigit() and int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def environment(pid):
    with open(f'/proc/{pid}/environ', 'rb') as f:
        return dict(item.split(b'=', 1) for item in f.read().split(b'\0') if b'=' in item)


def gone(pid):
    try:
        os.killpg(pid, 0)  # each process of the job leads a group of its own
    except ProcessLookupError:
        return True
    return False


def started_job(tmp_path):
    """A job of two summing workers, once both are summing; its launcher and processes (not
    the launcher's watchdog)."""
    job = launch(WORKER, 'wait')
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while sum('summing' in line for line in lines) < 2 and time.monotonic() < deadline:
        assert job.poll() is None, job.stderr.read()
        time.sleep(0.2)
    processes = [p for p in children(job.pid) if b'DMLC_ROLE' in environment(p)]
    assert len(processes) == 4
    return job, processes


def running(port):
    """The processes (not zombies) of the job whose scheduler listens on ``port``: those with
    its ``DMLC_PS_ROOT_PORT``, data-loader and other children included."""
    found = []
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{entry}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
            env = environment(int(entry))
        except OSError:
            continue
        if state != 'Z' and env.get(b'DMLC_PS_ROOT_PORT') == str(port).encode():
            found.append(int(entry))
    return found


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


# ssh's stand-in: runs the remote command here, its stdin a pipe that closes when this process
# ends, as sshd closes it when the connection drops
FAKE_SSH = """#!{python}
import shutil, subprocess, sys
remote = subprocess.Popen(['sh', '-c', sys.argv[-1]], stdin=subprocess.PIPE)
shutil.copyfileobj(sys.stdin.buffer, remote.stdin)
remote.stdin.close()
sys.exit(remote.wait())
"""
# a worker with a child of its own (as data-loader processes), which says so once both run
SPAWNING = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(600)']); print('spawned', flush=True); time.sleep(600)")


@pytest.mark.parametrize('where', ['here', 'over ssh'])
def test_kill_9_of_the_launcher_ends_every_process_of_the_job(tmp_path, where):
    """A job of a scheduler, a server and two workers that each start a child; on this
    machine, or (the servers and workers) on a host through ssh's stand-in."""
    hosts = []
    env = ENV
    if where == 'over ssh':
        (tmp_path / 'ssh').write_text(FAKE_SSH.format(python=sys.executable))
        (tmp_path / 'ssh').chmod(stat.S_IRWXU)
        (tmp_path / 'hosts').write_text('127.0.0.1\n')
        hosts = ['-H', str(tmp_path / 'hosts')]
        env = dict(ENV, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    port = free_port()
    job = subprocess.Popen(
        [sys.executable, '-m', 'gluon_ssdcl.launch', '-n', '2', '-s', '1', *hosts, '--port',
         str(port), '--', sys.executable, '-c', SPAWNING],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        lines = []
        threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True).start()
        assert wait_for(lambda: sum('spawned' in line for line in lines) == 2, 120), lines
        # the scheduler, the server, two workers and their children (over ssh: each under a
        # guard but the scheduler, which runs here)
        assert len(running(port)) == (6 if where == 'here' else 9)
        launched = children(job.pid)  # and the watchdog (and the ssh clients)
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
        assert wait_for(lambda: not running(port) and all(map(gone, launched)), 10), \
            running(port)
    finally:
        for pid in running(port):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_of_a_worker_stops_the_job_naming_it(tmp_path):
    job, processes = started_job(tmp_path)
    victim = next(p for p in processes if environment(p).get(b'DMLC_TASK_ID') == b'1'
                  and environment(p).get(b'DMLC_ROLE') == b'worker')
    start = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    job.wait(timeout=60)
    assert time.monotonic() - start < 60
    last = job.stderr.read().strip().splitlines()[-1]
    assert job.returncode == 1
    assert last.startswith(f'error: worker 1 (pid {victim}) was killed by signal 9'), last
    assert all(gone(p) for p in processes)


def test_ctrl_c_stops_every_process_of_the_job(tmp_path):
    job, processes = started_job(tmp_path)
    job.send_signal(signal.SIGINT)
    job.wait(timeout=60)
    assert job.returncode == 130
    assert job.stderr.read().strip().splitlines()[-1].startswith('error: interrupted')
    assert all(gone(p) for p in processes)
