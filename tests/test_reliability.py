"""Reliability of train_ssd_center.py: no broken model on disk, exact resume, one run per prefix."""
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, TINY, tiny_digits

from gluon_ssdcl.commands.train import main
from gluon_ssdcl.engine.checkpoint import load_checkpoint

@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    """A digits data set of 100 training images: not a multiple of the batch size 8."""
    return tiny_digits(tmp_path_factory, 100)


def train_process(prefix, digits, *flags):
    """train_ssd_center.py as a child process (one OpenMP thread: reproducible)."""
    argv = [sys.executable, os.path.join(ROOT, 'train_ssd_center.py')] + TINY + digits + [
        '--save-prefix', prefix] + list(flags)
    env = dict(os.environ, OMP_NUM_THREADS='1', TQDM_DISABLE='1')
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def error_lines(capsys):
    """The ``error:`` lines of what was written to stderr (the rest is progress bars)."""
    return [line for line in capsys.readouterr().err.splitlines() if 'error:' in line]


def assert_same_weights(path, reference):
    got, want = load_checkpoint(path), load_checkpoint(reference)
    assert got.meta['epoch'] == want.meta['epoch']
    for name, value in want.net_params.items():
        np.testing.assert_allclose(got.net_params[name].asnumpy(), value.asnumpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=name)
    np.testing.assert_allclose(got.centers.asnumpy(), want.centers.asnumpy(), rtol=1e-5,
                               atol=1e-6)


def test_a_diverging_run_exits_1_and_leaves_only_finite_files(tmp_path, digits, capsys):
    prefix = str(tmp_path / 'diverge')
    assert main(TINY + digits + ['--save-prefix', prefix, '--lr', '10', '--epochs', '3']) == 1
    err = error_lines(capsys)
    assert len(err) == 1 and 'non-finite' in err[0] and '--lr' in err[0], err
    for suffix in ('_last.params', '_best.params'):
        if os.path.exists(prefix + suffix):
            load_checkpoint(prefix + suffix)  # refuses a file with NaN or infinite values


def test_resume_takes_mode_data_and_settings_from_the_checkpoint(tmp_path, digits, caplog,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default prefix (runs/...) would be written
    prefix = str(tmp_path / 'center')
    assert main(TINY + digits + ['--save-prefix', prefix, '--center-loss', '--lmbd', '0.5',
                                 '--epochs', '1']) == 0
    assert main(['--resume', prefix, '--epochs', '2', '-j', '0', '--knn-k', '1']) == 0
    checkpoint = load_checkpoint(prefix + '_last.params')
    assert checkpoint.meta['mode'] == 'softmax-center' and checkpoint.meta['epoch'] == 1
    assert checkpoint.meta['network'] == 'ssd_64_tiny_center_digits'
    assert checkpoint.meta['flags']['lmbd'] == 0.5 and checkpoint.meta['embed_dim'] == 2
    assert [r['epoch'] for r in checkpoint.meta['history']] == [0, 1]
    assert 'the schedule now runs over 2 epochs (the checkpoint was started for 1)' in caplog.text
    assert not os.path.exists(tmp_path / 'runs')  # the resumed run writes to its own prefix


@pytest.mark.parametrize('flags, words', [
    (['--lr', '0.5'], ['--lr 0.5 differs', '0.04']),
    (['--center-only'], ['--center-only True differs']),
    (['--embed-dim', '3'], ['--embed-dim 3 differs']),
    (['--epochs', '1'], ['--epochs 1', 'already trained 1 epochs']),
])
def test_resume_refuses_flags_that_contradict_the_checkpoint(tmp_path, digits, capsys, flags,
                                                             words):
    prefix = str(tmp_path / 'run')
    assert main(TINY + digits + ['--save-prefix', prefix, '--center-loss', '--epochs', '1']) == 0
    before = os.path.getmtime(prefix + '_last.params')
    capsys.readouterr()
    assert main(['--resume', prefix] + flags) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and all(word in err[0] for word in words), err
    assert os.path.getmtime(prefix + '_last.params') == before


@pytest.mark.parametrize('delay', [0.0, 0.6])
def test_kill_9_and_resume_equals_the_uninterrupted_run(tmp_path, digits, delay):
    """100 images, batch 8: the last 4 images of every epoch are left out, so each epoch is
    its own and a resumed run repeats the uninterrupted one. (Carried over into the next epoch
    instead, they made a run resumed after an even epoch differ: with no delay the kill lands
    in epoch 1, after the checkpoint of epoch 0.)"""
    flags = ['--center-loss', '--epochs', '10', '--seed', '5']
    reference = str(tmp_path / 'whole')
    whole = train_process(reference, digits, *flags)
    killed_prefix = str(tmp_path / 'killed')
    killed = train_process(killed_prefix, digits, *flags)
    while not os.path.exists(killed_prefix + '_last.params') and killed.poll() is None:
        time.sleep(0.05)
    time.sleep(delay)
    killed.kill()  # SIGKILL
    killed.wait()
    assert load_checkpoint(killed_prefix + '_last.params').meta['epoch'] < 9, 'killed too late'

    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]
    resumed = train_process(killed_prefix, digits, '--resume', killed_prefix)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    assert_same_weights(killed_prefix + '_last.params', reference + '_last.params')
    assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]


def test_a_second_run_on_a_busy_prefix_refuses_and_the_first_keeps_its_files(tmp_path, digits,
                                                                                capsys):
    prefix = str(tmp_path / 'shared')
    first = train_process(prefix, digits, '--epochs', '8', '--seed', '1')
    deadline = time.time() + 120
    while (not os.path.exists(prefix + '.lock') or not open(prefix + '.lock').read()) \
            and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, 'the first run ended before the second could start'
    assert main(TINY + digits + ['--save-prefix', prefix, '--epochs', '8', '--seed', '2']) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and 'held by another run' in lines[0], lines
    assert f'pid {first.pid}' in lines[0]
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    assert load_checkpoint(prefix + '_last.params').meta['seed'] == 1
    with open(prefix + '_train.log') as f:
        assert f.read().count('OpenMP threads') == 1


def test_a_killed_runs_lock_and_temporary_files_are_taken_over(tmp_path, digits, caplog):
    prefix = str(tmp_path / 'stale')
    with open(prefix + '.lock', 'w') as f:
        f.write('pid 999999 on elsewhere since 2026-01-01 00:00:00\n')
    leftover = tmp_path / 'stale_last.params.4242-0a1b2c3d.tmp'
    leftover.write_bytes(b'')
    assert main(TINY + digits + ['--save-prefix', prefix, '--epochs', '1']) == 0
    assert 'took over' in caplog.text and 'pid 999999' in caplog.text
    with open(prefix + '_train.log') as f:
        assert 'took over' in f.read()
    assert not leftover.exists()


def test_a_batch_larger_than_the_data_set_is_lowered(tmp_path, digits, caplog):
    prefix = str(tmp_path / 'big')
    flags = [f for f in TINY if f not in ('--batch-size', '8')]
    assert main(flags + digits + ['--save-prefix', prefix, '--epochs', '1',
                                  '--batch-size', '500']) == 0
    assert 'batch size 500 is larger than the 100 training images: using 100' in caplog.text
    assert load_checkpoint(prefix + '_last.params').meta['history'][0]['loss'] > 0


def test_files_get_the_users_umask(tmp_path, digits):
    old = os.umask(0o027)
    try:
        prefix = str(tmp_path / 'mode')
        assert main(TINY + digits + ['--save-prefix', prefix, '--epochs', '1']) == 0
    finally:
        os.umask(old)
    for suffix in ('_last.params', '_eval.json'):
        assert stat.S_IMODE(os.stat(prefix + suffix).st_mode) == 0o640, suffix
