"""Checkpoints: weights a GluonCV user loads, the training state beside them, old files."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from gluon_ssdcl import CenterLoss, get_model, initialize_params, load_model
from gluon_ssdcl.commands.checkpoint import main
from gluon_ssdcl.engine.checkpoint import (convert_checkpoint, load_checkpoint, restore,
                                          save_checkpoint)

CLASSES = ['cat', 'dog']
META = {'network': 'ssd_64_tiny_center_custom', 'classes': CLASSES, 'embed_dim': 2,
        'mode': 'softmax-center', 'dataset': 'custom', 'epoch': 3}


def tiny(seed=0):
    mx.random.seed(seed)
    net = get_model('ssd_64_tiny_center_custom', classes=CLASSES, embed_dim=2)
    initialize_params(net, [mx.cpu()])
    center_loss = CenterLoss(2, 2)
    center_loss.initialize(mx.init.Normal(1.0))
    return net, center_loss


def weights(net):
    return {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()}


def test_the_weights_file_is_what_load_parameters_reads(tmp_path):
    net, center_loss = tiny()
    save_checkpoint(str(tmp_path / 'run_best.params'), net, center_loss, META)
    fresh = get_model('ssd_64_tiny_center_custom', classes=CLASSES, embed_dim=2)
    fresh.load_parameters(str(tmp_path / 'run_best.params'))  # GluonCV's way, no flags
    for name, value in weights(net).items():
        np.testing.assert_array_equal(weights(fresh)[name], value, err_msg=name)


def test_load_model_round_trip_from_a_prefix_prefers_the_best(tmp_path):
    net, center_loss = tiny()
    other, other_centers = tiny(seed=1)
    save_checkpoint(str(tmp_path / 'run_best.params'), net, center_loss, META)
    save_checkpoint(str(tmp_path / 'run_last.params'), other, other_centers, META)
    model = load_model(str(tmp_path / 'run'))
    assert model.classes == CLASSES and model.checkpoint.meta['epoch'] == 3
    np.testing.assert_array_equal(model.centers.asnumpy(),
                                  center_loss.centers.weight.data().asnumpy())
    for name, value in weights(net).items():
        np.testing.assert_array_equal(weights(model.net)[name], value, err_msg=name)
    last = load_model(str(tmp_path / 'run_last.state'))  # either file names the checkpoint
    np.testing.assert_array_equal(last.centers.asnumpy(),
                                  other_centers.centers.weight.data().asnumpy())


def test_load_model_builds_the_recorded_embed_hidden_and_none_for_older_checkpoints(tmp_path):
    """A checkpoint records its embedding heads' hidden layer and loads into heads with it; one
    without the record (saved before the option existed, when no head had one) loads into heads
    without it."""
    net = get_model('ssd_64_tiny_center_custom', classes=CLASSES, embed_dim=2, embed_hidden=3)
    initialize_params(net, [mx.cpu()])
    center_loss = CenterLoss(2, 2)
    center_loss.initialize()
    save_checkpoint(str(tmp_path / 'hidden_best.params'), net, center_loss,
                    dict(META, embed_hidden=3))
    loaded = load_model(str(tmp_path / 'hidden_best.params')).net
    assert loaded.embed_hidden == 3
    for name, value in weights(net).items():
        np.testing.assert_array_equal(weights(loaded)[name], value, err_msg=name)

    old = get_model('ssd_64_tiny_center_custom', classes=CLASSES, embed_dim=2)
    initialize_params(old, [mx.cpu()])
    save_checkpoint(str(tmp_path / 'old_best.params'), old, center_loss, META)
    assert 'embed_hidden' not in load_checkpoint(str(tmp_path / 'old_best.params')).meta
    assert load_model(str(tmp_path / 'old_best.params')).net.embed_hidden == 0


def test_checkpoints_of_the_previous_small_network_load_as_ssd_256_plain(tmp_path):
    """ssd_256_small changed in zoo revision 2 (the earlier network is ssd_256_plain): a
    checkpoint without a zoo revision that names ssd_256_small loads into ssd_256_plain with its
    weights; one of revision 2 names today's network."""
    from gluon_ssdcl.model.zoo import ZOO_REVISION, checkpoint_network
    assert ZOO_REVISION == 2
    assert checkpoint_network({'network': 'ssd_256_small_center_digits'}) == \
        'ssd_256_plain_center_digits'
    assert checkpoint_network({'network': 'ssd_256_small_center_custom', 'zoo_revision': 1}) == \
        'ssd_256_plain_center_custom'
    assert checkpoint_network({'network': 'ssd_256_small_center_digits', 'zoo_revision': 2}) == \
        'ssd_256_small_center_digits'
    assert checkpoint_network({'network': 'ssd_64_tiny_center_custom'}) == \
        'ssd_64_tiny_center_custom'
    mx.random.seed(0)
    previous = get_model('ssd_256_plain_center_digits')
    initialize_params(previous, [mx.cpu()])
    center_loss = CenterLoss(10, 16)
    center_loss.initialize()
    meta = dict(META, network='ssd_256_small_center_digits', classes=list('0123456789'),
                embed_dim=16, dataset='digits')
    save_checkpoint(str(tmp_path / 'old_best.params'), previous, center_loss, meta)
    loaded = load_model(str(tmp_path / 'old_best.params')).net
    assert loaded.embed_hidden == 0 and loaded.features.stem[0][0]._kwargs['kernel'] == (3, 3)
    for name, value in weights(previous).items():
        np.testing.assert_array_equal(weights(loaded)[name], value, err_msg=name)
    save_checkpoint(str(tmp_path / 'new_best.params'), previous, center_loss,
                    dict(meta, zoo_revision=2))  # the old weights recorded as today's network
    with pytest.raises(ValueError, match='does not fit the network'):
        load_model(str(tmp_path / 'new_best.params'))
    # the old checkpoint started into today's network (--init-from): the error names the
    # network it was trained as, by its name now
    today = get_model('ssd_256_small_center_digits')
    initialize_params(today, [mx.cpu()])
    with pytest.raises(ValueError, match=r'does not fit the network \(ssd_256_plain_center_digits'
                                         r', 10 classes, embed_dim 16, embed_hidden 0\)'):
        restore(load_checkpoint(str(tmp_path / 'old_best.params')), today, center_loss)


def test_weights_and_state_of_different_saves_are_refused(tmp_path):
    net, center_loss = tiny()
    other, _ = tiny(seed=1)
    save_checkpoint(str(tmp_path / 'a.params'), net, center_loss, META)
    save_checkpoint(str(tmp_path / 'b.params'), other, center_loss, META)
    (tmp_path / 'b.state').replace(tmp_path / 'a.state')
    with pytest.raises(ValueError, match='a.params and .*a.state are from different saves'):
        load_checkpoint(str(tmp_path / 'a.params'))
    (tmp_path / 'a.state').unlink()
    with pytest.raises(FileNotFoundError, match='a.state, the training state of'):
        load_checkpoint(str(tmp_path / 'a.params'))


def old_checkpoint(path, net, center_loss):
    """A one-file checkpoint as gluon_ssdcl 0.1 wrote it."""
    arrays = {'net.' + name: mx.nd.array(value) for name, value in weights(net).items()}
    arrays['centers'] = center_loss.centers.weight.data()
    arrays['meta'] = mx.nd.array(np.frombuffer(json.dumps(META).encode(), np.uint8),
                                 dtype='uint8')
    mx.nd.save(path, arrays)


def test_an_old_one_file_checkpoint_says_how_to_convert_it_and_converts(tmp_path, capsys):
    net, center_loss = tiny()
    path = str(tmp_path / 'old_best.params')
    old_checkpoint(path, net, center_loss)
    with pytest.raises(ValueError, match='gluon_ssdcl.checkpoint --convert .*old_best.params'):
        load_checkpoint(path)
    assert main(['--convert', path]) == 0
    assert capsys.readouterr().out.split() == [path, str(tmp_path / 'old_best.state')]
    model = load_model(path)
    assert model.checkpoint.meta == META
    for name, value in weights(net).items():
        np.testing.assert_array_equal(weights(model.net)[name], value, err_msg=name)
    with pytest.raises(ValueError, match='not a one-file checkpoint'):
        convert_checkpoint(path)


def test_the_converter_command_line_follows_the_rule(tmp_path):
    (tmp_path / 'junk.params').write_bytes(b'junk')
    proc = subprocess.run([sys.executable, '-m', 'gluon_ssdcl.checkpoint', '--convert',
                           str(tmp_path / 'junk.params')], capture_output=True, text=True,
                          timeout=120)
    lines = [line for line in proc.stderr.splitlines() if 'error:' in line]
    assert proc.returncode == 1 and len(lines) == 1 and 'junk.params' in lines[0]


class Killed(BaseException):
    """The process killed (not an exception any code handles)."""


def killed_at(monkeypatch, rename):
    """From now on, the ``rename``-th ``os.replace`` raises :class:`Killed` instead of
    renaming; returns the list of the destinations asked for."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == rename:
            raise Killed
        return real(src, dst)
    monkeypatch.setattr(os, 'replace', replace)
    return calls


def test_saves_killed_at_any_rename_leave_the_last_complete_checkpoint(tmp_path, monkeypatch):
    """Two saves in a row, each killed at one of its renames (or not at all): the checkpoint
    always loads, as the last complete save; a complete save then cleans up."""
    nets = [tiny(seed) for seed in range(4)]
    kills = 0
    for first in (1, 2, 3, 4):
        for second in (1, 2, 3, 4):
            folder = tmp_path / f'{first}-{second}'
            folder.mkdir()
            path = str(folder / 'run_last.params')
            save_checkpoint(path, *nets[0], {**META, 'epoch': 0})
            done = 0
            for epoch, rename in ((1, first), (2, second)):
                killed_at(monkeypatch, rename)
                try:
                    save_checkpoint(path, *nets[epoch], {**META, 'epoch': epoch})
                    done = epoch
                except Killed:
                    kills += 1
                monkeypatch.undo()
                checkpoint = load_checkpoint(path)
                assert checkpoint.meta['epoch'] == done, (first, second, epoch)
                for name, value in weights(nets[done][0]).items():
                    np.testing.assert_array_equal(checkpoint.net_params[name].asnumpy(), value)
            save_checkpoint(path, *nets[3], {**META, 'epoch': 3})
            assert load_checkpoint(path).meta['epoch'] == 3
            assert sorted(os.listdir(folder)) == ['run_last.params', 'run_last.state']
    assert kills >= 20


def test_an_unwritable_checkpoint_names_its_file(tmp_path, monkeypatch):
    net, center_loss = tiny()
    path = str(tmp_path / 'run_last.params')

    def full_disk(*args):
        raise mx.base.MXNetError('Check failed: FileStream.Write incomplete')
    monkeypatch.setattr(mx.nd, 'save', full_disk)
    with pytest.raises(OSError, match=r'^cannot write .*run_last.params: Check failed: '
                                      r'FileStream.Write incomplete$'):
        save_checkpoint(path, net, center_loss, META)
    monkeypatch.undo()

    def no_space(*args):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr('gluon_ssdcl.engine.checkpoint._trainer_bytes', no_space)
    from gluon_ssdcl.engine.train import make_trainers
    trainers = make_trainers(net, center_loss, 'softmax-center', lr=0.1)
    with pytest.raises(OSError, match=r'cannot write .*run_last.state: .*No space left'):
        save_checkpoint(path, net, center_loss, META, *trainers)
    assert os.listdir(tmp_path) == []


def test_a_directory_or_a_symlink_loop_is_no_checkpoint(tmp_path):
    (tmp_path / 'runs').mkdir()
    (tmp_path / 'loop.params').symlink_to('loop.params')
    (tmp_path / 'gone.params').symlink_to('nowhere.params')
    for path, reason in (('runs', 'is a directory'), ('loop.params', 'is a symlink loop'),
                         ('gone.params', 'is a broken symlink to nowhere.params'),
                         ('missing.params', 'does not exist')):
        with pytest.raises(OSError, match=f'{path} {reason}'):
            load_checkpoint(str(tmp_path / path))
