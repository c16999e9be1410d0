"""What a training run writes to its streams and its log: progress bars on a terminal only, a
line per epoch and per --log-interval batches, only the results on stdout, the results table in
the log, the training curves beside the checkpoints, and every default in --help."""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY, tiny_digits
from matplotlib.figure import Figure
from PIL import Image

from gluon_ssdcl.engine.checkpoint import load_checkpoint
from gluon_ssdcl.evaluation.compare import format_table

@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    """32 training images: 4 batches of 8 per epoch."""
    return tiny_digits(tmp_path_factory, 32)


def start_run(tmp_path, name, digits, *flags):
    """train_ssd_center.py in a child process, its stdout and stderr going to files."""
    prefix = str(tmp_path / name)
    out, err = (open(tmp_path / f'{name}.{stream}', 'w') for stream in ('out', 'err'))
    env = {k: v for k, v in os.environ.items() if not k.startswith('TQDM_')}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train_ssd_center.py')] + TINY
                            + digits + ['--save-prefix', prefix] + list(flags), cwd=ROOT,
                            env=dict(env, OMP_NUM_THREADS='1'), stdout=out, stderr=err)
    return proc, prefix, out, err


def finish(run):
    """Wait for a :func:`start_run` process; returns (prefix, stdout, stderr)."""
    proc, prefix, out, err = run
    proc.wait(timeout=600)
    out.close()
    err.close()
    with open(out.name) as f_out, open(err.name) as f_err:
        texts = f_out.read(), f_err.read()
    assert proc.returncode == 0, texts[1][-2000:]
    return prefix, *texts


def test_a_run_logged_to_files_writes_its_lines_and_only_the_results_on_stdout(tmp_path,
                                                                               digits):
    """Both runs at once: one with the defaults, one with --log-interval 2 and bars forced."""
    plain = start_run(tmp_path, 'plain', digits, '--epochs', '2')
    chatty = start_run(tmp_path, 'chatty', digits, '--epochs', '1', '--log-interval', '2',
                       '--progress', '--embed-hidden', '3')
    prefix, out, err = finish(plain)
    # no progress bars in a file: no carriage returns, no tqdm rates
    assert '\r' not in err and 'it/s' not in err, err[-2000:]
    assert re.findall(r'\[Epoch (\d+)\]', err) == ['0', '1']  # one line per epoch
    assert '[Batch' not in err  # 4 batches per epoch, fewer than the default --log-interval
    with open(prefix + '_eval.json') as f:
        assert out == format_table(json.load(f)) + '\n'  # stdout: the results, nothing else
    with open(prefix + '_train.log') as f:
        log = f.read()
    assert out in log  # the results table is in the log too
    assert not os.path.exists(prefix + '.lock')
    with Image.open(prefix + '_history.png') as png:
        assert png.format == 'PNG' and png.width > 300
    assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]
    assert load_checkpoint(prefix + '_last.params').meta['embed_hidden'] == 0  # tiny: none

    prefix, _, err = finish(chatty)
    assert load_checkpoint(prefix + '_last.params').meta['embed_hidden'] == 3
    lines = [line.split('\r')[-1] for line in err.split('\n')]
    assert re.findall(r'\[Epoch 0\]\[Batch (\d+)\] cls=\S+ box=\S+ center=\S+ [0-9.]+ img/s '
                      r'lr=\S+$', '\n'.join(lines), re.M) == ['1', '3']
    assert len(re.findall(r'\[Epoch 0\] cls=', err)) == 1
    assert 'epoch 0:' in err and 'it/s' in err  # --progress: bars even in a file
    with open(prefix + '_train.log') as f:
        assert f.read().count('[Batch') == 2


def test_progress_bars_follow_the_terminal_unless_forced(monkeypatch, capsys):
    from gluon_ssdcl.utils.progress import progress, progress_bars, progress_enabled

    class Terminal:
        def __init__(self, tty):
            self.tty, self.text = tty, ''

        def isatty(self):
            return self.tty

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    for tty in (False, True):
        stream = Terminal(tty)
        monkeypatch.setattr(sys, 'stderr', stream)
        assert list(progress(range(3), desc='work')) == [0, 1, 2]
        assert ('work' in stream.text) == tty == progress_enabled()
        for forced in (False, True):
            stream.text = ''
            with progress_bars(forced):
                assert progress_enabled() == forced
                list(progress(range(3), desc='work'))
            assert ('work' in stream.text) == forced
            assert progress_enabled() == tty  # the setting ends with the block


def test_plot_history_draws_the_learning_rate_per_epoch(tmp_path):
    from gluon_ssdcl.viz import plot_history, save_history_plot
    history = [{'epoch': 0, 'loss': 2.0, 'lr': 0.04}, {'epoch': 1, 'loss': 1.0, 'lr': 0.01,
                                                       'map': 0.5}]
    fig = Figure()
    loss_ax, lr_ax = fig.subplots(2, 1)
    assert plot_history(history, ax=loss_ax, lr_ax=lr_ax) is fig
    (line,) = lr_ax.get_lines()
    assert list(line.get_xdata()) == [0, 1]
    np.testing.assert_allclose(line.get_ydata(), [0.04, 0.01])
    path = str(tmp_path / 'run_history.png')
    assert save_history_plot(history, path) == path
    with Image.open(path) as png:
        assert png.format == 'PNG'
    assert os.listdir(tmp_path) == ['run_history.png']


def test_help_shows_every_default():
    from gluon_ssdcl.commands.train import build_parser
    parser = build_parser()
    missing = []
    for action in parser._actions:  # pylint: disable=protected-access
        if action.default is None or action.default is False or \
                action.default in ('', [], argparse.SUPPRESS):
            continue
        text = (action.help or '') % {'default': action.default}
        shown = format(action.default, 'g') if isinstance(action.default, float) else \
            str(action.default)
        if 'default' not in text or shown not in text:
            missing.append(f'{action.option_strings[0]} (default {action.default}): {text!r}')
    assert not missing, '\n'.join(missing)
    assert '(default: 233)' in ' '.join(parser.format_help().split())


def test_a_scheduled_trainer_prints_nothing_and_follows_its_schedule(tiny_net, capsys):
    from gluon_ssdcl import CenterLoss
    from gluon_ssdcl.engine.train import make_lr_scheduler, make_trainers
    center_loss = CenterLoss(3, 2)
    center_loss.initialize()
    schedule = make_lr_scheduler(0.04, epochs=2, iters_per_epoch=10, warmup_iters=4)
    net_trainer, _ = make_trainers(tiny_net, center_loss, 'softmax-center', lr=0.04,
                                   lr_scheduler=schedule)
    assert capsys.readouterr().out == ''  # MXNet prints its warning on stdout
    assert net_trainer.learning_rate == pytest.approx(schedule(0))
    net_trainer.optimizer.num_update = 4  # after the warm-up: the peak
    assert net_trainer.learning_rate == pytest.approx(0.04)
