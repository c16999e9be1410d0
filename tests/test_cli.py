import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gluon_ssdcl import get_model
from gluon_ssdcl.commands.train import main, parse_args, resume_flags
from gluon_ssdcl.engine.checkpoint import load_checkpoint
from gluon_ssdcl.evaluation.inference import net_anchors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


BAD_FLAGS = [  # (flags, what the one error line says)
    (['--lmbd', '-1'], 'argument --lmbd: must be a finite number > 0'),
    (['--lr', 'inf'], 'argument --lr: must be a finite number > 0'),
    (['--start-epoch', '-3'], 'argument --start-epoch: must be an integer >= 0'),
    (['--alpha', '0'], '--alpha must be in (0, 1]'),
    (['--alpha', '1.5'], '--alpha must be in (0, 1]'),
    (['--center-loss', '--center-only'], 'not allowed with argument'),
    (['--init-from', 'missing.params'], 'no such file'),
    (['--resume', 'nowhere/run'], 'no checkpoint'),
    (['--network', 'nonet'], 'no model for --network nonet'),
    (['--dataset', 'custom'], 'needs --dataset-root'),
    (['--epochs', '0'], 'positive integer'),
    (['--kvstore', 'dist_sync'], 'runs in a job of workers: python -m gluon_ssdcl.launch'),
]


def test_bad_flags_exit_2_with_one_line():
    """Every case at once (each a fresh Python process), then each is checked."""
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'train_ssd_center.py')] + flags,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for flags, _ in BAD_FLAGS]
    failures = []
    for (flags, reason), proc in zip(BAD_FLAGS, procs):
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        if (proc.returncode != 2 or len(lines) != 1 or reason not in lines[0]
                or 'Traceback' in err):
            failures.append(f'{flags}: exit {proc.returncode}, stderr:\n{err[-800:]}')
    assert not failures, '\n\n'.join(failures)


def test_a_resumed_run_keeps_its_network_and_hidden_layer(tmp_path):
    """A run resumed from a checkpoint of zoo revision 1 (no revision recorded, ssd_256_small,
    flags from before --embed-hidden) continues as ssd_256_plain without a hidden layer; one
    of revision 2 keeps today's ssd_256_small and its recorded hidden layer."""
    last = tmp_path / 'run_last.params'
    last.write_bytes(b'')
    old_flags = {'network': 'small', 'epochs': 7, 'center_loss': True}
    for meta, model, hidden in (
            ({'network': 'ssd_256_small_center_digits', 'epoch': 2, 'flags': old_flags},
             'ssd_256_plain_center_digits', 0),
            ({'network': 'ssd_256_small_center_digits', 'zoo_revision': 2, 'epoch': 2,
              'embed_hidden': 128, 'flags': dict(old_flags, embed_hidden=128)},
             'ssd_256_small_center_digits', 128)):
        args = parse_args(['--resume', str(last)])
        assert args.embed_hidden is None and args.wd is None  # not yet known: the checkpoint's
        resume_flags(args, meta)
        assert (args.model, args.embed_hidden, args.wd) == (model, hidden, 5e-4)
    resumed = parse_args(['--resume', str(last)])
    resume_flags(resumed, {'network': 'ssd_256_small_center_digits', 'zoo_revision': 2, 'epoch': 2,
                           'flags': dict(old_flags, embed_hidden=128, wd=0.002)})
    assert resumed.wd == 0.002


def test_defaults_are_the_mission_run():
    args = parse_args(['--center-loss', '--lmbd', '1', '--alpha', '0.5'])
    assert args.model == 'ssd_256_small_center_digits'
    assert args.mode.value == 'softmax-center' and args.gpus == [] and args.dataset == 'digits'
    assert args.augment is False  # digits: targets computed once, held in memory
    # the documented default run: 4 epochs of 7,000 digit images, cosine from lr 0.04 after 100
    # warm-up iterations, on ssd_256_small (a 4x4 patch stem, two extra 3x3 convs at stride 8
    # and one at 16, hidden embedding layers of 128 channels) with anchors of ratios 1, 2, 1/2
    assert (args.epochs, args.digits_train, args.digits_val, args.batch_size) == (4, 7000, 500, 16)
    assert (args.lr, args.lr_mode, args.warmup_iters) == (0.04, 'cosine', 100)
    assert args.embed_hidden == 128 and args.save_prefix.endswith('_softmax-center')
    for flags, suffix in ((['--embed-hidden', '64'], '_h64'), (['--embed-hidden', '128'], ''),
                          (['--network', 'plain'], ''), (['--network', 'plain',
                                                           '--embed-hidden', '128'], '_h128')):
        other = parse_args(['--center-loss'] + flags)  # its own files, unless the default
        assert other.save_prefix.endswith('_center_digits_softmax-center' + suffix), flags
    assert parse_args(['--network', 'plain']).embed_hidden == 0
    # weight decay: the small network's own (measured on the digits), GluonCV's for the others
    assert args.wd == 0.005 and parse_args(['--wd', '0.001']).wd == 0.001
    assert parse_args(['--network', 'plain']).wd == parse_args(['--network', 'vgg16_atrous',
                                                                '--data-shape', '300']).wd == 5e-4
    center_only = parse_args(['--center-only'])  # the second stage fine-tunes
    assert (center_only.epochs, center_only.lr, center_only.warmup_iters) == (3, 0.001, 0)
    given = parse_args(['--center-only', '--lr', '0.01', '--epochs', '5'])
    assert (given.epochs, given.lr, given.warmup_iters) == (5, 0.01, 0)
    net = get_model(args.model)
    features = net.features
    assert features.stem[0][0]._kwargs['kernel'] == (4, 4)  # the patch stem
    assert [len(stage) // 3 for stage in [features.stem[1], *features.stages]] == [3, 2, 1, 1, 1]
    assert net.embed_hidden == 128
    net.initialize()
    # 32² + 16² + 8² + 4² + 2² locations, 4 anchors each (3 ratios, and ratio 1 at a second size)
    assert net_anchors(net).shape == (1, 1364 * 4, 4)
    assert parse_args(['--augment']).augment is True
    assert parse_args(['--dataset', 'voc']).augment is True


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    from gluon_ssdcl.data.digitset import ensure_digits
    return ensure_digits(str(tmp_path_factory.mktemp('digits')), num_train=16, num_val=8,
                         progress=False)


def run_cli(tmp_path, digits_root, name, *flags):
    prefix = str(tmp_path / name)
    code = main(['--network', 'tiny', '--data-shape', '64', '--dataset-root', digits_root,
                 '--digits-train', '16', '--digits-val', '8', '--epochs', '2', '--batch-size',
                 '8', '-j', '0', '--embed-dim', '2', '--save-prefix', prefix, '--lr', '0.01',
                 '--warmup-iters', '1', '--knn-k', '3'] + list(flags))
    assert code == 0
    return prefix


def test_each_mode_trains_end_to_end(tmp_path, digits_root):
    softmax = run_cli(tmp_path, digits_root, 'softmax')
    center = run_cli(tmp_path, digits_root, 'center', '--center-loss', '--lmbd', '1',
                     '--alpha', '0.5')
    stage2 = run_cli(tmp_path, digits_root, 'stage2', '--center-only', '--init-from',
                     center + '_last.params', '--epochs', '1')
    for prefix, mode in ((softmax, 'softmax'), (center, 'softmax-center'), (stage2, 'center')):
        for suffix in ('_last.params', '_best.params', '_train.log'):
            assert os.path.isfile(prefix + suffix), prefix + suffix
        with open(prefix + '_eval.json') as f:
            results = json.load(f)
        assert results['mode'] == mode
        assert 0 <= results['map'] <= 1 and 0 <= results['softmax_acc'] <= 1
        embedding_cells = [results[k] for k in ('knn_acc', 'center_acc', 'knn_map')]
        if mode == 'softmax':
            assert embedding_cells == [None, None, None]
        else:
            assert all(0 <= v <= 1 for v in embedding_cells)
        with open(prefix + '_train.log') as f:
            assert '[Epoch 0]' in f.read()
    # the weights file of a trained run is what a GluonCV user loads, as is
    from gluon_ssdcl import get_model
    meta = load_checkpoint(center + '_best.params').meta
    gluoncv_way = get_model(meta['network'], embed_dim=meta['embed_dim'])
    gluoncv_way.load_parameters(center + '_best.params')
    first, second = (load_checkpoint(p + '_last.params') for p in (center, stage2))
    for key, value in first.net_params.items():
        if key.startswith('class_predictors'):
            assert (second.net_params[key].asnumpy() == value.asnumpy()).all(), key
    assert second.meta['classes'] == list('0123456789')


def test_a_corrupt_image_stops_training_with_its_name_or_is_skipped(tmp_path, capsys):
    from test_data_check import write_voc_folder
    items = {f'img{i}': [('cat' if i % 2 else 'dog', (8, 8, 40, 40))] for i in range(6)}
    root = write_voc_folder(tmp_path / 'voc', items, {'train': [f'img{i}' for i in range(4)],
                                                      'val': ['img4', 'img5']})
    with open(os.path.join(root, 'JPEGImages', 'img2.jpg'), 'wb') as f:
        f.write(b'\xff\xd8\xff\xe0 this is not a jpeg')
    flags = ['--network', 'tiny', '--data-shape', '64', '--dataset', 'custom', '--dataset-root',
             root, '--epochs', '1', '--batch-size', '2', '-j', '0', '--embed-dim', '2',
             '--save-prefix', str(tmp_path / 'run'), '--knn-k', '1']
    assert main(flags) == 1
    err = capsys.readouterr().err
    assert 'img2.jpg' in err and 'Traceback' not in err
    assert not os.path.exists(tmp_path / 'run_last.params')
    assert main(flags + ['--skip-bad']) == 0
    assert load_checkpoint(str(tmp_path / 'run_last.params')).meta['classes'] == ['cat', 'dog']


def test_plotting_saves_feature_maps_and_gifs(tmp_path, digits_root):
    from PIL import Image
    prefix = run_cli(tmp_path, digits_root, 'plot', '--center-loss', '--plotting',
                     '--plot-images', '4')
    for split in ('train', 'val'):
        for epoch in (0, 1):
            with Image.open(f'{prefix}_features_{split}_epoch{epoch}.png') as png:
                assert png.width > 100 and png.height > 100
        with Image.open(f'{prefix}_features_{split}.gif') as gif:
            assert gif.n_frames == 2
    tsne = f'{prefix}_features_val_tsne.png'
    with Image.open(tsne) as png:
        assert png.format == 'PNG' and png.width > 100 and png.height > 100
    assert not os.path.exists(f'{prefix}_features_train_tsne.png')
    # --overwrite removes it with the run's other files; a run without --plotting writes none
    run_cli(tmp_path, digits_root, 'plot', '--overwrite', '--epochs', '1')
    assert not os.path.exists(tsne)


def test_init_from_another_data_sets_checkpoint_reuses_the_shared_classes(tmp_path, digits_root):
    import mxnet as mx
    from test_data_check import write_voc_folder

    from gluon_ssdcl import CenterLoss, get_model, initialize_params
    from gluon_ssdcl.engine.checkpoint import restore
    digits = load_checkpoint(run_cli(tmp_path, digits_root, 'digits', '--center-loss') +
                             '_last.params')
    net = get_model('ssd_64_tiny_center_custom', classes=['7', 'cat'], embed_dim=2)
    initialize_params(net, [mx.cpu()])
    center_loss = CenterLoss(2, 2)
    center_loss.initialize()
    restore(digits, net, center_loss)
    head = net.class_predictors[0].weight.data().asnumpy()
    old_head = digits.net_params['class_predictors.0.weight'].asnumpy()
    np.testing.assert_array_equal(head[[0, 1]], old_head[[0, 8]])  # background, '7'
    np.testing.assert_array_equal(center_loss.centers.weight.data().asnumpy()[0],
                                  digits.centers.asnumpy()[7])
    # pylint: disable-next=protected-access
    for name, value in net._collect_params_with_prefix().items():
        if not name.startswith('class_predictors'):
            np.testing.assert_array_equal(value.data().asnumpy(),
                                          digits.net_params[name].asnumpy(), err_msg=name)
    items = {f'i{i}': [('cat' if i % 2 else '7', (8, 8, 40, 40))] for i in range(6)}
    root = write_voc_folder(tmp_path / 'voc', items, {'train': [f'i{i}' for i in range(4)],
                                                      'val': ['i4', 'i5']})
    prefix = str(tmp_path / 'finetune')
    assert main(['--network', 'tiny', '--data-shape', '64', '--dataset', 'custom',
                 '--dataset-root', root, '--epochs', '1', '--batch-size', '2', '-j', '0',
                 '--embed-dim', '2', '--knn-k', '1', '--save-prefix', prefix, '--center-loss',
                 '--init-from', str(tmp_path / 'digits_last.params')]) == 0
    assert load_checkpoint(prefix + '_last.params').meta['classes'] == ['7', 'cat']
