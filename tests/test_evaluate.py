"""Tests of gluon_ssdcl.evaluation.inference (positives, mAP) and gluon-ssdcl evaluate (the
table, the CLI); the --help of evaluate, detect, export and register."""
import argparse
import importlib
import json
import os

import mxnet as mx
import numpy as np
import pytest
from test_data_check import write_voc_folder

from gluon_ssdcl import CenterLoss, get_model, initialize_params
from gluon_ssdcl.commands.evaluate import main
from gluon_ssdcl.data.datasets import get_dataloader, get_train_transform
from gluon_ssdcl.engine.checkpoint import save_checkpoint
from gluon_ssdcl.evaluation.compare import compare_classifiers, format_table, save_results
from gluon_ssdcl.evaluation.inference import (build_gallery, collect_positives, detection_map,
                                              positive_loader)

CLASSES = ['a', 'b', 'c']
CTX = [mx.cpu()]
IMAGE_MEAN, IMAGE_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

# one object per image: (xmin, ymin, xmax, ymax, class_id), sizes near the tiny net's anchors
BOXES = [(8, 8, 32, 32, 0), (30, 20, 60, 50, 1), (4, 30, 44, 62, 2), (20, 4, 44, 28, 0),
         (10, 10, 50, 50, 1), (36, 36, 60, 60, 2)]


def pixel_value(class_id):
    """Grey level of the images of class `class_id` (see `image_dataset`)."""
    return 40 + 80 * class_id


def image_dataset(boxes=BOXES):
    """(image (64, 64, 3) uint8, label (1, 6)) items; each image is uniform, its grey level
    telling the class of its box."""
    return mx.gluon.data.SimpleDataset([
        (mx.nd.full((64, 64, 3), pixel_value(c), dtype=np.uint8),
         np.array([[x0, y0, x1, y1, c, 0]], dtype=np.float32))
        for x0, y0, x1, y1, c in boxes])


def anchors_of(net):
    return net.anchor_outputs(mx.nd.zeros((1, 3, 64, 64)))[2]


def val_loader(net, dataset, batch_size=4):
    return get_dataloader(dataset, dataset, 64, 64, anchors_of(net), batch_size, augment=False)[1]


# ---------------------------------------------------------------- positives of the anchors

def test_collect_positives_matches_the_target_generator(tiny_net):
    dataset = image_dataset()
    transform = get_train_transform(64, 64, anchors_of(tiny_net), augment=False)
    targets = [transform(*item)[1].asnumpy() for item in dataset]
    expected_labels = np.concatenate([t[t > 0] - 1 for t in targets]).astype(int)
    assert all((t > 0).any() for t in targets)

    loader = positive_loader(dataset, tiny_net, batch_size=4)
    embeddings, labels, softmax_pred = collect_positives(tiny_net, loader, CTX)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(expected_labels), 2)
    assert np.array_equal(labels, expected_labels)
    # one box per image: each image's positives carry its box class
    per_image = [np.full(int((t > 0).sum()), box[4]) for t, box in zip(targets, BOXES)]
    assert np.array_equal(labels, np.concatenate(per_image))
    assert softmax_pred.dtype == np.int64 and set(softmax_pred) <= {0, 1, 2}

    # the rows are the anchor outputs of the positive anchors, softmax without background
    image = transform(*dataset[0])[0].expand_dims(0)
    cls_preds, _, _, anchor_embeddings = tiny_net.anchor_outputs(image)
    positive = targets[0] > 0
    count = int(positive.sum())
    np.testing.assert_allclose(embeddings[:count], anchor_embeddings[0].asnumpy()[positive],
                               rtol=1e-5, atol=1e-6)
    assert np.array_equal(softmax_pred[:count],
                          cls_preds[0, :, 1:].argmax(axis=-1).asnumpy()[positive])

    first, first_labels, _ = collect_positives(tiny_net, loader, CTX, max_batches=1)
    assert len(first) == sum(int((t > 0).sum()) for t in targets[:4])
    assert np.array_equal(first_labels, labels[:len(first)])


def test_gallery_reads_images_in_a_seeded_order_until_it_is_full(tiny_net):
    dataset = image_dataset()
    transform = get_train_transform(64, 64, anchors_of(tiny_net), augment=False)
    counts = [int((transform(*item)[1].asnumpy() > 0).sum()) for item in dataset]
    order = np.random.default_rng(3).permutation(len(dataset))
    # by hand: the images in the seeded order, batch by batch (2), until the rows reach 3
    needed, rows = 0, 0
    while rows < 3:
        rows += sum(counts[i] for i in order[needed:needed + 2])
        needed += 2
    loader = positive_loader(dataset, tiny_net, batch_size=2, order=order.tolist())
    _, labels, _ = collect_positives(tiny_net, loader, CTX, max_rows=3)
    expected = np.concatenate([np.full(counts[i], BOXES[i][4]) for i in order[:needed]])
    assert np.array_equal(labels, expected) and needed < len(dataset)
    gallery, gallery_labels = build_gallery(tiny_net, dataset, CTX, 2, 3, seed=3)
    assert len(gallery) == 3 and set(gallery_labels) <= set(expected)
    everything, _ = build_gallery(tiny_net, dataset, CTX, 2, 1000, seed=3)
    assert len(everything) == sum(counts)


def test_collect_positives_splits_over_contexts(tiny_net):
    loader = positive_loader(image_dataset(), tiny_net, batch_size=5)
    single = collect_positives(tiny_net, loader, CTX)
    tiny_net.collect_params().reset_ctx([mx.cpu(0), mx.cpu(1)])
    split = collect_positives(tiny_net, loader, [mx.cpu(0), mx.cpu(1)])
    np.testing.assert_allclose(split[0], single[0], rtol=1e-5, atol=1e-6)
    assert np.array_equal(split[1], single[1]) and np.array_equal(split[2], single[2])


# ---------------------------------------------------------------- mAP

@pytest.mark.parametrize('hybridize', [False, True])
def test_detection_map(tiny_net, hybridize):
    if hybridize:
        tiny_net.hybridize()
    loader = val_loader(tiny_net, image_dataset())
    mean_ap, per_class = detection_map(tiny_net, loader, CTX, CLASSES)
    assert list(per_class) == CLASSES
    assert 0 <= mean_ap <= 1 and all(0 <= ap <= 1 for ap in per_class.values())
    assert not tiny_net.infer_embeddings

    seen = []

    def everything_is_a(embeddings):
        seen.append(embeddings.shape)
        return np.zeros(len(embeddings))

    relabelled, relabelled_per_class = detection_map(tiny_net, loader, CTX, CLASSES,
                                                     relabel=everything_is_a)
    assert seen and all(shape[1] == 2 for shape in seen)
    assert relabelled_per_class['b'] == 0 and relabelled_per_class['c'] == 0
    assert 0 <= relabelled_per_class['a'] <= 1
    assert not tiny_net.infer_embeddings  # restored

    tiny_net.set_embeddings(infer=True)
    detection_map(tiny_net, loader, CTX, CLASSES, relabel=everything_is_a, max_batches=1)
    assert tiny_net.infer_embeddings


# ---------------------------------------------------------------- the comparison

def test_compare_classifiers_softmax_mode_has_no_embedding_cells(tiny_net):
    dataset = image_dataset()
    results = compare_classifiers(tiny_net, None, dataset, dataset, CTX, CLASSES, 'softmax',
                                  batch_size=4)
    assert results['knn_acc'] is None and results['center_acc'] is None
    assert results['knn_map'] is None and results['gallery_size'] is None
    assert 0 <= results['map'] <= 1 and 0 <= results['softmax_acc'] <= 1
    assert list(results['map_per_class']) == CLASSES
    assert results['num_val_positives'] > 0 and results['mode'] == 'softmax'
    json.dumps(results, allow_nan=False)


def test_compare_classifiers_with_separable_embeddings(tiny_net, monkeypatch):
    """Embeddings equal to the image's mean normalised grey level separate the classes
    perfectly: KNN and nearest-center accuracy are then 1."""
    real = tiny_net.anchor_outputs

    def separable(x):
        cls_preds, box_preds, anchors, embeddings = real(x)
        level = x.mean(axis=(1, 2, 3)).reshape((-1, 1, 1))
        return [cls_preds, box_preds, anchors, mx.nd.broadcast_like(level, embeddings)]

    monkeypatch.setattr(tiny_net, 'anchor_outputs', separable)
    levels = [np.mean((pixel_value(c) / 255 - IMAGE_MEAN) / IMAGE_STD) for c in range(3)]
    centers = np.repeat(np.array(levels)[:, None], 2, axis=1)
    train, val = image_dataset(BOXES[:3]), image_dataset(BOXES[3:])
    results = compare_classifiers(tiny_net, centers, train, val, CTX, CLASSES,
                                  'softmax-center', batch_size=2, knn_k=1, gallery_size=1000)
    assert results['knn_acc'] == 1.0 and results['center_acc'] == 1.0
    assert 0 <= results['softmax_acc'] <= 1 and 0 <= results['knn_map'] <= 1
    assert results['knn_k'] == 1 and 3 <= results['gallery_size'] <= 1000
    assert results['num_val_positives'] > 0 and results['mode'] == 'softmax-center'
    # every embedding of a class is the same point, its center: no spread at all
    assert results['compactness_ratio'] == 0
    assert results['center_compactness_ratio'] == pytest.approx(0, abs=1e-5)
    assert results['confusions'] == {'softmax': {}, 'knn': {}, 'center': {}}  # not digits

    capped = compare_classifiers(tiny_net, centers, train, val, CTX, CLASSES, 'center',
                                 batch_size=2, knn_k=50, gallery_size=4, max_batches=1)
    assert capped['gallery_size'] == 4 and capped['knn_k'] == 4


# ---------------------------------------------------------------- table, JSON and command line

def test_format_table_marks_missing_values():
    softmax = {'mode': 'softmax', 'map': 0.5, 'softmax_acc': 0.75, 'knn_acc': None,
               'center_acc': None, 'knn_map': None, 'compactness_ratio': 0.25,
               'center_compactness_ratio': None, 'confusion_softmax': 0.125,
               'confusion_knn': None, 'confusion_center': None}
    center = {**softmax, 'mode': 'softmax-center', 'knn_acc': 0.8, 'center_acc': 0.7,
              'knn_map': 0.55}
    table = format_table(softmax)
    assert table.count('–') == 6 and '0.5000' in table and '0.7500' in table
    assert '0.2500' in table and '0.1250' in table
    for title in ('mAP', 'softmax acc', 'KNN acc', 'nearest-center acc', 'mAP relabelled by KNN',
                  'spread / gap (class means)', 'confusable digits, KNN'):
        assert title in table
    both = format_table([softmax, center]).splitlines()
    assert 'softmax' in both[0] and 'softmax-center' in both[0]
    knn_row = next(line for line in both if line.startswith('KNN acc'))
    assert knn_row.split()[-2:] == ['–', '0.8000']


def test_save_results_writes_json_atomically(tmp_path):
    path = tmp_path / 'out' / 'eval.json'
    save_results({'map': 0.5, 'knn_acc': None}, str(path))
    assert json.loads(path.read_text()) == {'map': 0.5, 'knn_acc': None}
    assert os.listdir(path.parent) == ['eval.json']


def test_main_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(['--params', str(tmp_path / 'missing.params')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and len(err.strip().splitlines()) == 1
    (tmp_path / 'junk.params').write_text('not a checkpoint')
    assert main(['--params', str(tmp_path / 'junk.params')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and len(err.strip().splitlines()) == 1


def test_main_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--params', 'x.params', '--gpus', 'zero'])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_main_evaluates_a_checkpoint(tmp_path, capsys):
    items = {'a': [('cat', (5, 6, 30, 40))],
             'b': [('dog', (10, 10, 20, 20)), ('cat', (30, 5, 60, 45))],
             'c': [('dog', (40, 2, 62, 30))]}
    root = write_voc_folder(tmp_path / 'custom', items, {'train': ['a', 'b'], 'val': ['c', 'b']})
    classes = ['cat', 'dog']
    net = get_model('ssd_64_tiny_center_custom', classes=classes, embed_dim=2)
    initialize_params(net, CTX)
    center_loss = CenterLoss(2, 2)
    center_loss.initialize()
    meta = {'network': 'ssd_64_tiny_center_custom', 'classes': classes, 'embed_dim': 2,
            'mode': 'softmax-center', 'data_shape': 64, 'dataset': 'custom',
            'dataset_root': root, 'seed': 0}
    params = tmp_path / 'run' / 'ssd_best.params'
    save_checkpoint(str(params), net, center_loss, meta)

    assert main(['--params', str(params), '--knn-k', '3']) == 0
    out = capsys.readouterr().out
    assert 'KNN acc' in out and 'softmax-center' in out
    results = json.loads((tmp_path / 'run' / 'ssd_best_eval.json').read_text())
    assert results['mode'] == 'softmax-center' and list(results['map_per_class']) == classes
    assert 0 <= results['knn_acc'] <= 1 and results['knn_k'] == 3

    assert main(['--params', str(params), '--classes', 'cat,dog,bird']) == 1
    assert capsys.readouterr().err.startswith('error: --classes')


@pytest.mark.parametrize('name', ['evaluate', 'detect', 'export', 'register'])
def test_help_shows_every_default(name, capsys):
    """Every optional flag's help says its default, and a value default is the parser's."""
    command = importlib.import_module(f'gluon_ssdcl.commands.{name}')
    parser = command.build_parser()
    # pylint: disable-next=protected-access
    optional = [a for a in parser._actions if a.option_strings and not a.required
                and a.default != argparse.SUPPRESS]
    missing = [a.option_strings[-1] for a in optional if 'default' not in (a.help or '')]
    assert not missing, f'{name}: no default in the help of {missing}'
    with pytest.raises(SystemExit) as stop:
        command.main(['--help'])
    assert stop.value.code == 0
    shown = ' '.join(capsys.readouterr().out.split())
    for action in optional:
        default = action.default
        if isinstance(default, list) and default:
            default = ','.join(map(str, default))
        if isinstance(default, (int, float, str)) and not isinstance(default, bool):
            assert f'default: {default})' in shown, (action.option_strings, default)
