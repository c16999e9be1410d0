"""The files of a training run: its prefix's lock, refusing to replace another run, what
--resume and --start-epoch write, and damaged or unwritable checkpoint files."""
import fcntl
import glob
import os
import pickle
import shutil
import threading
import time

import mxnet as mx
import numpy as np
import pytest

from gluon_ssdcl.commands.train import main
from gluon_ssdcl.engine.checkpoint import load_checkpoint
from gluon_ssdcl.utils import files
from gluon_ssdcl.utils.files import RunLockedError, file_sha256, prefix_lock

TINY = ['--network', 'tiny', '--data-shape', '64', '--batch-size', '8', '-j', '0',
        '--embed-dim', '2', '--warmup-iters', '1', '--knn-k', '1']
RESUME = ['-j', '0', '--knn-k', '1']


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    from gluon_ssdcl.data.digitset import ensure_digits
    root = ensure_digits(str(tmp_path_factory.mktemp('digits')), num_train=16, num_val=8,
                         progress=False)
    return ['--dataset-root', root, '--digits-train', '16', '--digits-val', '8']


@pytest.fixture(scope='module')
def finished(tmp_path_factory, digits):
    """The prefix of a finished 1-epoch softmax-center run (copy it before changing it)."""
    prefix = str(tmp_path_factory.mktemp('finished') / 'base')
    assert main(TINY + digits + ['--save-prefix', prefix, '--center-loss', '--epochs', '1']) == 0
    return prefix


def copy_run(prefix, folder):
    """Copy the files of the run at ``prefix`` into ``folder``; returns the copy's prefix."""
    for path in glob.glob(prefix + '_*'):
        shutil.copy2(path, folder)
    return os.path.join(folder, os.path.basename(prefix))


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if 'error:' in line]


def fingerprints(prefix):
    return {os.path.basename(p): file_sha256(p) for p in sorted(glob.glob(prefix + '_*'))}


def test_a_finished_run_leaves_no_lock(finished):
    assert not os.path.exists(finished + '.lock')
    assert os.path.isfile(finished + '_last.params')


def test_the_lock_file_is_removed_while_locked_and_a_removed_one_is_not_held(tmp_path,
                                                                             monkeypatch):
    path = str(tmp_path / 'run.lock')
    with prefix_lock(str(tmp_path / 'run')) as previous:
        assert previous is None and open(path).read().startswith(f'pid {os.getpid()} ')
    assert not os.path.exists(path)
    # the race the removal opens: this process opens run.lock, then its holder removes it and
    # a third run creates and locks a new one before this process locks the removed file
    real_flock, third = fcntl.flock, []

    def flock(fd, operation):
        if not third:
            os.remove(path)
            third.append(open(path, 'w'))
            real_flock(third[0].fileno(), fcntl.LOCK_EX)
        return real_flock(fd, operation)
    monkeypatch.setattr(files.fcntl, 'flock', flock)
    with open(path, 'w'):
        pass
    with pytest.raises(RunLockedError, match='run.lock is held by another run'):
        with prefix_lock(str(tmp_path / 'run')):
            pass
    assert os.path.exists(path)  # the third run's lock is left alone
    third[0].close()


def test_waiters_on_a_removed_lock_file_take_turns(tmp_path):
    """Threads each hold ``exclusive_lock(..., remove=True)`` in turn, never two at once."""
    path, inside, overlaps = str(tmp_path / 'x.lock'), [], []

    def worker():
        for _ in range(20):
            with files.exclusive_lock(path, wait=True, remove=True):
                inside.append(1)
                overlaps.append(len(inside))
                time.sleep(0.001)
                inside.pop()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(overlaps) == 80 and max(overlaps) == 1
    assert not os.path.exists(path)


def test_a_new_run_on_a_finished_runs_prefix_is_refused_unless_overwrite(finished, digits,
                                                                          tmp_path, capsys):
    prefix = copy_run(finished, str(tmp_path))
    before = fingerprints(prefix)
    flags = TINY + digits + ['--save-prefix', prefix, '--epochs', '1', '--seed', '7']
    assert main(flags) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and '--resume' in lines[0] and '--overwrite' in lines[0], lines
    assert prefix in lines[0]
    assert fingerprints(prefix) == before
    assert not os.path.exists(prefix + '.lock')
    assert main(flags + ['--overwrite']) == 0
    assert load_checkpoint(prefix + '_last.params').meta['seed'] == 7
    assert load_checkpoint(prefix + '_best.params').meta['seed'] == 7
    with open(prefix + '_train.log') as f:
        assert f.read().count('OpenMP threads') == 1  # the log of the new run only


def test_start_epoch_at_or_past_epochs_is_refused(finished, digits, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(TINY + digits + ['--save-prefix', str(tmp_path / 'new'), '--epochs', '2',
                              '--start-epoch', '2'])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--start-epoch 2' in err[0], err
    assert os.listdir(tmp_path) == []
    prefix = copy_run(finished, str(tmp_path))
    before = fingerprints(prefix)
    assert main(['--resume', prefix, '--start-epoch', '1'] + RESUME) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and '--start-epoch 1' in lines[0] and '--epochs 1' in lines[0]
    assert fingerprints(prefix) == before


def test_resume_writes_to_the_runs_own_prefix(finished, tmp_path, capsys):
    prefix = copy_run(finished, str(tmp_path))
    with pytest.raises(SystemExit) as stop:
        main(['--resume', prefix, '--save-prefix', str(tmp_path / 'other'), '--epochs', '2'])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--save-prefix' in err[0] and prefix in err[0], err
    assert main(['--resume', prefix + '_best.params', '--epochs', '2'] + RESUME) == 0
    assert load_checkpoint(prefix + '_last.params').meta['epoch'] == 1
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(prefix) + suffix for suffix in (
            '_best.params', '_best.state', '_last.params', '_last.state', '_eval.json',
            '_history.png', '_train.log'))


def test_a_nan_in_the_trainer_state_names_the_state_file(finished, tmp_path, capsys):
    prefix = copy_run(finished, str(tmp_path))
    path = prefix + '_last.state'
    state = mx.nd.load(path)
    states, optimizer = pickle.loads(state['net_trainer'].asnumpy().tobytes())
    momentum = next(value for value in states.values() if value is not None)
    momentum[:] = np.nan
    data = pickle.dumps((states, optimizer))
    state['net_trainer'] = mx.nd.array(np.frombuffer(data, np.uint8), dtype='uint8')
    mx.nd.save(path, state)
    load_checkpoint(prefix)  # the file itself is a valid checkpoint
    assert main(['--resume', prefix, '--epochs', '2'] + RESUME) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and path in lines[0] and 'NaN' in lines[0], lines
    assert '--lr' not in lines[0]


def test_a_full_disk_during_a_save_names_the_file(digits, tmp_path, capsys, monkeypatch):
    def full_disk(path, arrays):
        with open(path, 'wb') as f:
            f.write(b'half')
        raise mx.base.MXNetError('[12:00:00] src/io/local_filesys.cc:209: Check failed: '
                                 'std::fwrite(ptr, 1, size, fp_) == size: FileStream.Write '
                                 'incomplete')
    monkeypatch.setattr(mx.nd, 'save', full_disk)
    prefix = str(tmp_path / 'full')
    assert main(TINY + digits + ['--save-prefix', prefix, '--epochs', '1']) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and f'cannot write {prefix}_best.params' in lines[0], lines
    assert 'FileStream.Write incomplete' in lines[0]
    assert sorted(os.listdir(tmp_path)) == ['full_train.log']


def test_a_directory_or_a_symlink_loop_is_named_for_what_it_is(tmp_path, capsys):
    from gluon_ssdcl.commands.evaluate import main as evaluate
    folder, dot_params = tmp_path / 'folder', tmp_path / 'dir.params'
    folder.mkdir()
    dot_params.mkdir()
    loop = tmp_path / 'loop.params'
    loop.symlink_to(loop.name)
    cases = [(main, flag, str(path), words)
             for flag in ('--resume', '--init-from')
             for path, words in ((folder, 'is a directory'), (dot_params, 'is a directory'),
                                 (loop, 'is a symlink loop'))]
    cases += [(evaluate, '--params', str(folder), 'is a directory'),
              (evaluate, '--params', str(loop), 'is a symlink loop')]
    failures = []
    for command, flag, path, words in cases:
        code = command([flag, path])
        lines = error_lines(capsys)
        if code != 1 or len(lines) != 1 or path not in lines[0] or words not in lines[0]:
            failures.append(f'{flag} {path}: exit {code}, {lines}')
    assert not failures, '\n'.join(failures)
