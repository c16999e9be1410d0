"""Tests of gluon_ssdcl.embeddings.class_bank (radii, unknown scores, the class bank,
registration), the
held-out digits split, ``evaluate --open-set`` and ``python -m gluon_ssdcl.register``."""
import json
import os

import cv2
import mxnet as mx
import numpy as np
import pytest
from test_data_check import write_voc_folder

from gluon_ssdcl import CenterLoss, get_model, initialize_params
from gluon_ssdcl.commands.evaluate import main as evaluate_main
from gluon_ssdcl.commands.register import main as register_main
from gluon_ssdcl.commands.register import parse_example
from gluon_ssdcl.commands.train import parse_args
from gluon_ssdcl.data.digitset import default_root, ensure_digits, parse_classes
from gluon_ssdcl.embeddings.class_bank import (UNKNOWN_ID, assign, bank_path, class_radii,
                                               knn_scores, load_bank, make_bank, save_bank,
                                               unknown_scores, with_class)
from gluon_ssdcl.embeddings.knn import center_distances, knn_distances
from gluon_ssdcl.embeddings.metrics import auroc, rejected_at_recall
from gluon_ssdcl.embeddings.scores import fit_scores, unknown_score
from gluon_ssdcl.engine.checkpoint import load_model, save_checkpoint
from gluon_ssdcl.engine.head_tuning import initial_rows
from gluon_ssdcl.evaluation.class_banks import (bank_scores, embed_anchors, embed_boxes,
                                                register_class)
from gluon_ssdcl.evaluation.few_shot import example_pool, fine_tuned_head, format_few_shot
from gluon_ssdcl.data.datasets import get_dataset
from gluon_ssdcl.evaluation.inference import (ImageDetections, anchor_cache, cached_detections,
                                              collect_positives, positive_loader,
                                              validation_detections)
from gluon_ssdcl.evaluation.open_set import match_detections, open_set_evaluation
from gluon_ssdcl.utils.files import file_sha256

CTX = [mx.cpu()]


# ---------------------------------------------------------------- hand-made embeddings

def ring(center, distances):
    """Points at the given distances from ``center`` (2-D), along alternating axes."""
    center = np.asarray(center, np.float64)
    steps = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0])]
    return np.array([center + d * steps[i % 3] for i, d in enumerate(distances)])


def two_class_bank(quantile=0.5):
    """Class 0 around (0, 0) at distances 1..4, class 1 around (10, 0) at 2, 2, 2, 2; class 2
    ('held') has no training embeddings."""
    embeddings = np.vstack([ring((0, 0), [1, 2, 3, 4]), ring((10, 0), [2, 2, 2, 2])])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]])
    return make_bank(['a', 'b', 'held'], embeddings, labels, centers, quantile), embeddings, labels


def test_class_radii_are_the_quantile_of_the_distances_to_the_own_center():
    _, embeddings, labels = two_class_bank()
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    np.testing.assert_allclose(class_radii(embeddings, labels, centers, 0.5), [2.5, 2.0])
    np.testing.assert_allclose(class_radii(embeddings, labels, centers, 1.0), [4.0, 2.0])
    radii = class_radii(embeddings[:4], labels[:4], centers, 0.5)
    assert radii[0] == 2.5 and np.isnan(radii[1])  # no embeddings: no radius
    with pytest.raises(ValueError, match='quantile'):
        class_radii(embeddings, labels, centers, 0)


def test_unknown_score_is_the_distance_to_the_nearest_center_over_its_radius():
    bank, _, _ = two_class_bank(quantile=0.5)  # radii 2.5 and 2
    queries = np.array([[1.0, 0.0], [5.0, 0.0], [11.0, 0.0], [10.0, 3.0], [5.0, 5.0]])
    ids, scores = unknown_scores(bank, queries)
    # (5, 5) is nearest to the held-out class's center, which has no radius: never assigned
    np.testing.assert_array_equal(ids, [0, 0, 1, 1, 0])
    np.testing.assert_allclose(scores, [1 / 2.5, 5 / 2.5, 1 / 2, 3 / 2, np.hypot(5, 5) / 2.5])
    np.testing.assert_array_equal(assign(bank, queries), [0, UNKNOWN_ID, 1, UNKNOWN_ID,
                                                          UNKNOWN_ID])
    np.testing.assert_array_equal(assign(bank, queries, threshold=None), [0, 0, 1, 1, 0])
    np.testing.assert_array_equal(assign(bank, queries, threshold=1.6), [0, UNKNOWN_ID, 1, 1,
                                                                         UNKNOWN_ID])


def test_bank_of_a_class_without_positives_has_no_center_and_means_by_default():
    bank, embeddings, labels = two_class_bank()
    assert bank.center_source == 'learned' and list(bank.active) == [True, True, False]
    assert np.isnan(bank.centers[2]).all()
    means = make_bank(['a', 'b', 'held'], embeddings, labels)
    assert means.center_source == 'means'
    np.testing.assert_allclose(means.centers[:2], [embeddings[:4].mean(0), embeddings[4:].mean(0)])


def test_knn_score_and_distances():
    bank, _, _ = two_class_bank()
    np.testing.assert_allclose(knn_distances([[0, 0], [3, 4], [1, 0]], [[0, 0]], k=3),
                               [[0, 1, 5]])
    np.testing.assert_allclose(center_distances([[0, 0], [3, 4]], [[0, 0], [3, 0]]),
                               [[0, 5], [3, 4]])
    # (0, 0): the class-0 points at 1, 2, 3 are the 3 nearest
    np.testing.assert_allclose(knn_scores(bank, [[0.0, 0.0]], k=3), [2.0])


def test_auroc_and_rejection_at_recall_known_answers():
    assert auroc([0, 1, 2], [1.5, 3]) == pytest.approx(5 / 6)
    assert auroc([1, 1], [1, 1]) == 0.5 and auroc([0, 1], [2, 3]) == 1.0
    assert auroc([], [1]) is None
    threshold, rejected = rejected_at_recall(np.arange(100), [50, 98, 200], 0.95)
    assert threshold == 95 and rejected == pytest.approx(2 / 3)


def test_with_class_center_is_the_mean_and_radius_the_median_of_trained_radii():
    bank, _, _ = two_class_bank(quantile=0.5)
    examples = np.array([[5.0, 5.0], [7.0, 5.0], [6.0, 8.0]])
    held = with_class(bank, 'held', examples, 2)  # a model class held out of training: its id
    assert held.classes == ['a', 'b', 'held'] and held.registered == {'held': 2}
    np.testing.assert_allclose(held.centers[2], [6.0, 6.0])
    assert held.radii[2] == pytest.approx(np.median([2.5, 2.0]))
    assert len(held.gallery) == 11 and list(held.gallery_labels[-3:]) == [2, 2, 2]
    new = with_class(held, 'new', [[20.0, 20.0]], 1)  # a new name: appended
    assert new.classes == ['a', 'b', 'held', 'new'] and new.radii[3] == pytest.approx(2.25)
    assert assign(new, [[20.5, 20.0], [6.0, 6.5]]).tolist() == [3, 2]
    with pytest.raises(ValueError, match="'held' is already registered.*--replace"):
        with_class(new, 'held', [[0.0, 9.0]], 1)
    again = with_class(new, 'held', [[0.0, 9.0]], 1, replace=True)  # registered again
    np.testing.assert_allclose(again.centers[2], [0.0, 9.0])
    assert (again.gallery_labels == 2).sum() == 1
    with pytest.raises(ValueError, match='non-finite'):
        with_class(bank, 'x', [[np.nan, 1.0]], 1)
    with pytest.raises(ValueError, match="'a' was trained"):
        with_class(bank, 'a', examples, 1)
    with pytest.raises(ValueError, match='no positive anchor'):
        with_class(bank, 'x', np.zeros((0, 2)), 1)


def test_bank_round_trip_and_other_weights_refused(tmp_path):
    bank, _, _ = two_class_bank()
    bank = with_class(bank._replace(params_sha256='abc'), 'new', [[1.0, 1.0]], 1)
    path = bank_path(str(tmp_path / 'run_best.params'))
    assert path == str(tmp_path / 'run_best.openset.npz')
    save_bank(bank, path)
    loaded = load_bank(path, 'abc')
    assert loaded.classes == bank.classes and loaded.registered == {'new': 1}
    np.testing.assert_array_equal(loaded.centers, bank.centers)
    np.testing.assert_array_equal(loaded.gallery_labels, bank.gallery_labels)
    with pytest.raises(ValueError, match='other weights'):
        load_bank(path, 'def')
    (tmp_path / 'bad.npz').write_text('no')
    with pytest.raises(ValueError, match='not a readable class bank'):
        load_bank(str(tmp_path / 'bad.npz'))
    data = open(path, 'rb').read()
    for cut in (len(data) // 2, len(data) - 30):  # truncated: no zip directory, or part of it
        (tmp_path / 'truncated.npz').write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"{tmp_path / 'truncated.npz'} is not a readable"):
            load_bank(str(tmp_path / 'truncated.npz'))


def damaged_banks():
    """{what: a bank of :func:`two_class_bank` damaged so}: each cannot label embeddings."""
    bank, _, _ = two_class_bank()
    centers, radii, gallery = bank.centers.copy(), bank.radii.copy(), bank.gallery.copy()
    centers[1, 0] = np.nan
    nan_radius, inf_radius, negative = radii.copy(), radii.copy(), radii.copy()
    nan_radius[0], inf_radius[0], negative[1] = np.nan, np.inf, -1.0
    gallery[3, 1] = np.nan
    no_center = radii.copy()
    no_center[2] = 1.0  # the held-out class: a radius, but no center
    return {'NaN center': bank._replace(centers=centers),
            'NaN radius': bank._replace(radii=nan_radius),
            'infinite radius': bank._replace(radii=inf_radius),
            'negative radius': bank._replace(radii=negative),
            'radius without center': bank._replace(radii=no_center),
            'no class': bank._replace(radii=np.full(3, np.nan)),
            'NaN gallery': bank._replace(gallery=gallery),
            'gallery label': bank._replace(gallery_labels=bank.gallery_labels + 5),
            'shapes': bank._replace(radii=radii[:2])}


@pytest.mark.parametrize('damage', sorted(damaged_banks()))
def test_a_damaged_bank_is_refused_naming_its_file(tmp_path, damage):
    path = str(tmp_path / 'run_best.openset.npz')
    save_bank(damaged_banks()[damage], path)
    with pytest.raises(ValueError, match=f'{path} is not a usable class bank'):
        load_bank(path)


def test_save_bank_is_all_or_nothing(tmp_path, monkeypatch):
    """A disk that fills while the bank is written leaves the earlier bank whole."""
    bank, _, _ = two_class_bank()
    path = str(tmp_path / 'run_best.openset.npz')
    save_bank(bank, path)
    before = open(path, 'rb').read()

    def full_disk(file, **arrays):
        file.write(b'PK\x03\x04 half a zip')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(np, 'savez', full_disk)
    with pytest.raises(OSError, match='No space left'):
        save_bank(with_class(bank, 'new', [[1.0, 1.0]], 1), path)
    assert os.listdir(tmp_path) == ['run_best.openset.npz']
    assert open(path, 'rb').read() == before


def test_match_detections_takes_the_best_overlapping_detection():
    image = ImageDetections(
        ids=np.array([0, 1, 0, 1], np.float32), scores=np.array([0.9, 0.8, 0.3, 0.6], np.float32),
        bboxes=np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 21, 30, 30]],
                        np.float32), embeddings=None,
        gt_bboxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
        gt_ids=np.array([1, 2, 0], np.float32), gt_difficult=None)
    # object 0 (class 1, known): its class's detection 1; object 1 (class 2, unknown): the
    # best-scoring overlapping detection 3; object 2: not boxed
    assert match_detections(image, unknown=[2]) == ([1], [3])
    assert match_detections(image, unknown=[2], min_score=0.7) == ([1], [])


def test_open_set_evaluation_of_hand_made_detections():
    """Known digits a and b boxed near their centers, an unknown c boxed far from both and
    labelled a with a higher score than a's true positive: every distance rule rejects it,
    which lifts a's AP from 0.5 (VOC07) to 1."""
    gallery = np.vstack([ring([0, 0], [1, 2, 1, 2]), ring([10, 0], [1, 2, 1, 2])])
    bank = make_bank(['a', 'b', 'c'], gallery, np.repeat([0, 1], len(gallery) // 2))
    head = np.zeros((4, 2)), np.zeros(4)
    head[0][1:3] = np.eye(2)
    scorer = fit_scores(bank, *head)
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32)
    image = ImageDetections(
        ids=np.array([0, 1, 0], np.float32), scores=np.array([0.9, 0.9, 0.95], np.float32),
        bboxes=boxes, embeddings=np.array([[0.1, 0], [10, 0.1], [5, 8]], np.float32),
        gt_bboxes=boxes, gt_ids=np.array([0, 1, 2], np.float32), gt_difficult=None)
    results = open_set_evaluation([image], bank, scorer, ['a', 'b', 'c'], [2], knn_k=1)
    entry = results['by_min_score']['0']
    assert (entry['num_known'], entry['num_unknown'], entry['num_unknown_objects']) == (2, 1, 1)
    assert entry['unknown_labelled_as'] == {'a': 1.0, 'b': 0.0, 'c': 0.0}
    for name in ('center', 'cosine', 'mahalanobis', 'gaussian', 'knn'):
        assert entry[name]['auroc'] == 1.0, name
    assert results['map_known'] == pytest.approx(0.75)
    for rule in ('center', 'mahalanobis', 'gaussian'):
        assert results['map_known_rejecting'][rule] == pytest.approx(1.0), rule
    assert results['summary']['fpr95_mahalanobis'] == 0.0


# ---------------------------------------------------------------- the held-out digits split

def test_training_split_without_held_out_classes_has_none_of_them(tmp_path, monkeypatch):
    monkeypatch.setenv('GLUON_SSDCL_DATA', str(tmp_path))
    params = dict(num_train=24, num_val=8, image_size=64, progress=False, workers=1)
    held = ensure_digits(exclude_classes=[9, 8], **params)
    full = ensure_digits(**params)
    assert held == default_root(24, 8, image_size=64, exclude_classes=[8, 9])
    assert held.endswith('-without8-9') and not full.endswith('-without8-9')
    manifest = json.loads(open(os.path.join(held, 'manifest.json')).read())
    assert manifest['exclude_classes'] == [8, 9]
    assert 'exclude_classes' not in json.loads(open(os.path.join(full, 'manifest.json')).read())

    def names(root, split):
        folder = os.path.join(root, 'VOC2007', 'Annotations')
        found = []
        for image_id in open(os.path.join(root, 'VOC2007', 'ImageSets', 'Main',
                                          f'{split}.txt')).read().split():
            text = open(os.path.join(folder, image_id + '.xml')).read()
            found += [line.strip()[6:7] for line in text.splitlines() if '<name>' in line]
        return found
    assert names(held, 'train') and not {'8', '9'} & set(names(held, 'train'))
    assert {'8', '9'} & set(names(full, 'train'))
    assert names(held, 'val') == names(full, 'val')  # validation keeps every class
    for image_id in ('val_000000', 'val_000007'):
        path = os.path.join('VOC2007', 'JPEGImages', image_id + '.jpg')
        assert open(os.path.join(held, path), 'rb').read() == \
            open(os.path.join(full, path), 'rb').read()


def test_class_lists_and_the_train_flag(capsys):
    assert parse_classes('9, 8,8') == [8, 9]
    with pytest.raises(ValueError, match='not a digit'):
        parse_classes('8,a')
    with pytest.raises(ValueError, match='all ten'):
        parse_classes('0,1,2,3,4,5,6,7,8,9')
    args = parse_args(['--digits-exclude', '9,8'])
    assert args.digits_exclude == [8, 9] and args.save_prefix.endswith('_without8-9')
    for argv in (['--digits-exclude', '10'], ['--digits-exclude', '8', '--dataset', 'voc']):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and '--digits-exclude' in err


# ---------------------------------------------------------------- tiny checkpoints

def checkpoint(tmp_path, meta_extra=None, classes=('cat', 'dog'), root=None):
    """An untrained tiny checkpoint on a custom folder whose training split has no dog."""
    if root is None:
        items = {'a': [('cat', (5, 6, 30, 40))], 'b': [('cat', (8, 4, 40, 44))],
                 'c': [('dog', (30, 2, 62, 30)), ('cat', (2, 10, 28, 46))],
                 'd': [('dog', (4, 4, 40, 44))]}
        root = write_voc_folder(tmp_path / 'custom', items,
                                {'train': ['a', 'b'], 'val': ['c', 'd', 'a']})
    net = get_model('ssd_64_tiny_center_custom', classes=list(classes), embed_dim=2)
    initialize_params(net, CTX)
    center_loss = CenterLoss(len(classes), 2)
    center_loss.initialize()
    meta = {'network': 'ssd_64_tiny_center_custom', 'classes': list(classes), 'embed_dim': 2,
            'mode': 'softmax-center', 'data_shape': 64, 'dataset': 'custom',
            'dataset_root': root, 'seed': 0, **(meta_extra or {})}
    params = tmp_path / 'run' / 'ssd_best.params'
    save_checkpoint(str(params), net, center_loss, meta)
    return str(params), root


def test_embed_boxes_are_the_positive_anchors_of_the_boxes(tmp_path):
    params, root = checkpoint(tmp_path)
    model = load_model(params, CTX)
    image = cv2.imread(os.path.join(root, 'JPEGImages', 'd.jpg'))[:, :, ::-1].copy()
    box = np.array([[4, 4, 40, 44]], np.float32)
    got = embed_boxes(model.net, [image], [box], CTX)
    dataset = mx.gluon.data.SimpleDataset(
        [(mx.nd.array(image, dtype='uint8'), np.array([[4, 4, 40, 44, 0, 0]], np.float32))])
    expected = collect_positives(model.net, positive_loader(dataset, model.net, 4), CTX)[0]
    assert len(got) > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_registered_center_is_the_mean_and_the_next_detection_gets_its_label(tmp_path):
    params, root = checkpoint(tmp_path)
    model = load_model(params, CTX)
    image = cv2.imread(os.path.join(root, 'JPEGImages', 'd.jpg'))[:, :, ::-1].copy()
    box = np.array([[4, 4, 40, 44]], np.float32)
    # a bank whose trained class lies far from every embedding of this untrained net
    far = np.full((4, 2), 1e3) + np.arange(8).reshape(4, 2)
    bank = make_bank(['cat', 'dog'], far, np.zeros(4, np.int64))
    registered = register_class(model, bank, 'star', [image], [box], CTX)
    embeddings = embed_boxes(model.net, [image], [box], CTX)
    assert registered.classes == ['cat', 'dog', 'star']
    np.testing.assert_allclose(registered.centers[2], embeddings.mean(axis=0), rtol=1e-5)
    dog = register_class(model, bank, 'dog', [image], [box], CTX)  # held out: its own id
    assert dog.classes == ['cat', 'dog'] and dog.active.tolist() == [True, True]
    # the next detection of the object, with the registered bank: labelled 'star'
    from gluon_ssdcl.deploy.detect import detect_image
    model.net.set_embeddings(infer=True)
    found = detect_image(model.net, mx.nd.array(image, dtype='uint8'), CTX)
    from gluoncv.utils.bbox import bbox_iou
    best = int(np.argmax(bbox_iou(found.bboxes, box)[:, 0]))
    assert assign(registered, found.embeddings[best:best + 1], threshold=None).tolist() == [2]


def test_fine_tuned_head_changes_only_the_registered_row(tmp_path):
    params, root = checkpoint(tmp_path)
    model = load_model(params, CTX)
    image = cv2.imread(os.path.join(root, 'JPEGImages', 'd.jpg'))[:, :, ::-1].copy()
    box = np.array([[4, 4, 40, 44]], np.float32)
    cat = np.random.RandomState(0).randn(6, 2)
    bank = register_class(model, make_bank(['cat', 'dog'], cat, np.zeros(6, np.int64)), 'dog',
                          [image], [box], CTX)
    dense = model.net.class_head[0]
    weight, bias = dense.weight.data().asnumpy(), dense.bias.data().asnumpy()
    tuned_weight, tuned_bias = fine_tuned_head(model.net, bank, [1], [image], [box], CTX)
    np.testing.assert_array_equal(tuned_weight[:2], weight[:2])  # background and cat
    np.testing.assert_array_equal(tuned_bias[:2], bias[:2])
    start_head = initial_rows(weight, bias, [2], bank.centers[1:2], [1])
    start = start_head[0]
    assert not np.allclose(tuned_weight[2], start[2]) and not np.allclose(tuned_weight[2],
                                                                           weight[2])
    # its training loss (the gallery and the example's background anchors) fell from the start
    anchors, targets = embed_anchors(model.net, [image], [box], CTX)
    data = np.concatenate([bank.gallery, anchors[targets == 0]])
    labels = np.concatenate([bank.gallery_labels + 1, np.zeros((targets == 0).sum(), int)])
    counts = np.bincount(labels, minlength=3)

    def loss(weight, bias):
        z = data @ weight.T + bias
        log_p = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - z.max(1, keepdims=True)
        return -np.sum(log_p[np.arange(len(z)), labels] / (counts[labels] * 3))
    assert loss(tuned_weight, tuned_bias) < loss(*start_head)
    np.testing.assert_array_equal(dense.weight.data().asnumpy(), weight)  # the net's own head
    imprinted = fine_tuned_head(model.net, bank, [1], [image], [box], CTX, steps=0)
    np.testing.assert_array_equal(imprinted[0], start)


def test_cached_detections_are_the_detectors(tmp_path):
    """The detections of the kept per-anchor outputs equal those of the whole net."""
    params, root = checkpoint(tmp_path)
    model = load_model(params, CTX)
    _, val = get_dataset('custom', root, classes=['cat', 'dog'])
    cache = anchor_cache(model.net, val, CTX, 2)
    cached = cached_detections(model.net, cache)
    direct = validation_detections(model.net, val, CTX, 2)
    assert len(cached) == len(direct) == 3 and sum(len(d.ids) for d in direct) > 0
    for a, b in zip(cached, direct):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
        np.testing.assert_allclose(a.bboxes, b.bboxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(a.gt_ids, b.gt_ids)


def test_evaluate_open_set_runs_on_a_tiny_model(tmp_path, capsys):
    params, _ = checkpoint(tmp_path)
    output = tmp_path / 'openset.json'
    assert evaluate_main(['--params', params, '--open-set', '--unknown-classes', 'dog',
                          '--output', str(output), '--knn-k', '2', '--batch-size', '2']) == 0
    out = capsys.readouterr().out
    assert 'AUROC' in out and 'radius rule' in out
    results = json.loads(output.read_text())
    assert results['unknown_classes'] == ['dog'] and results['center_source'] == 'learned'
    entry = results['by_min_score']['0']
    assert entry['num_unknown_objects'] == 2
    assert set(entry) >= {'center', 'means', 'msp', 'knn', 'radius_rule'}
    for name in ('center', 'means', 'msp', 'knn'):
        value = entry[name]['auroc']
        assert value is None or 0 <= value <= 1
    assert os.path.exists(bank_path(params))  # the trained classes' bank, saved for later
    for argv, flag in ((['--unknown-classes', 'bird'], '--unknown-classes'),
                       (['--unknown-classes', 'cat'], '--unknown-classes')):
        assert evaluate_main(['--params', params, '--open-set'] + argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f'error: {flag}') and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(['--params', params, '--unknown-classes', 'dog'])
    assert exit_info.value.code == 2


def test_register_command_saves_the_class_in_the_bank(tmp_path, capsys):
    params, root = checkpoint(tmp_path)
    image = os.path.join(root, 'JPEGImages', 'd.jpg')
    assert register_main(['--params', params, '--name', 'star', f'{image}:4,4,40,44',
                          '--batch-size', '2']) == 0
    assert "registered 'star' (class id 2)" in capsys.readouterr().out
    bank = load_bank(bank_path(params))
    assert bank.classes == ['cat', 'dog', 'star'] and bank.registered == {'star': 1}
    before = open(bank_path(params), 'rb').read()
    again = ['--params', params, '--name', 'star', f'{image}:4,4,40,44', f'{image}:2,2,30,30']
    assert register_main(again) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'star' is already registered" in err, err
    assert '--replace' in err and open(bank_path(params), 'rb').read() == before
    assert register_main(again + ['--replace']) == 0
    assert "registered 'star' (class id 2) from 2 boxes" in capsys.readouterr().out
    bank = load_bank(bank_path(params))
    assert bank.classes == ['cat', 'dog', 'star'] and bank.registered == {'star': 2}
    assert register_main(['--params', params, '--name', 'cat', f'{image}:4,4,40,44']) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: class 'cat' was trained") and len(err.splitlines()) == 1
    assert register_main(['--params', params, '--name', 'x', f'{image}:4,4,400,44']) == 1
    assert 'outside' in capsys.readouterr().err
    assert register_main(['--params', params, '--name', 'x', f'{tmp_path}/none.jpg:1,1,9,9']) == 1
    assert capsys.readouterr().err.startswith('error: ')
    for argv in (['--name', 'x'], ['--name', 'x', 'img.jpg:1,2'], ['--evaluate']):
        with pytest.raises(SystemExit) as exit_info:
            register_main(['--params', params] + argv)
        assert exit_info.value.code == 2
    assert parse_example('a:b.jpg:1,2,3,4')[0] == 'a:b.jpg'


def test_few_shot_evaluation_on_tiny_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('GLUON_SSDCL_DATA', str(tmp_path / 'data'))
    sizes = dict(num_train=24, num_val=8, image_size=64, progress=False, workers=1)
    held = ensure_digits(exclude_classes=[8, 9], **sizes)
    from gluon_ssdcl.data.digitset import CLASSES
    flags = {'digits_exclude': [8, 9], 'digits_train': 24, 'digits_val': 8}
    params, _ = checkpoint(tmp_path, {'dataset': 'digits', 'flags': flags},
                           classes=CLASSES, root=held)
    output = tmp_path / 'fewshot.json'
    assert register_main(['--params', params, '--evaluate', '--classes', '8,9', '--shots', '1,2',
                          '--draws', '1', '--output', str(output), '--batch-size', '4',
                          '--fine-tune']) == 0
    results = json.loads(output.read_text())
    assert results['classes'] == ['8', '9'] and set(results['by_shots']) == {'1', '2'}
    assert set(results['by_shots']['2']) == {'center', 'knn', 'hybrid', 'imprint', 'finetune'}
    for labelling in ('center', 'knn', 'hybrid', 'imprint', 'finetune'):
        value = results['summary'][f'ap_registered_{labelling}_k2']
        assert value is None or 0 <= value <= 1
    assert 'AP registered' in capsys.readouterr().out
    from gluon_ssdcl.data.datasets import get_dataset
    pool = example_pool(get_dataset('digits', ensure_digits(**sizes))[0], [8, 9], 2)
    assert all(len(boxes) == 2 for boxes in pool.values())
    assert register_main(['--params', params, '--evaluate', '--classes', '7']) == 1
    assert capsys.readouterr().err.startswith('error: --classes 7')
    # one validation image: classes without a validation box have no AP, written as null
    assert register_main(['--params', params, '--evaluate', '--classes', '8,9', '--shots', '1',
                          '--draws', '1', '--output', str(output), '--batch-size', '4',
                          '--max-images', '1']) == 0, capsys.readouterr().err
    results = json.loads(output.read_text())
    per_class = results['by_shots']['1']['center']['ap_per_class']
    assert None in per_class.values(), per_class
    assert all(v is None or 0 <= v <= 1 for v in per_class.values())
    assert 'AP registered' in capsys.readouterr().out


def test_format_few_shot_marks_missing_values():
    results = {'classes': ['8', '9'], 'draws': 1, 'map_known_softmax': None,
               'map_known_center_base': 0.25,
               'by_shots': {'1': {'center': {'ap_registered': None, 'map_known': 0.5}}}}
    lines = format_few_shot(results).splitlines()
    assert 'class head –' in lines[0] and 'before registering 0.2500' in lines[0]
    assert lines[2].split() == ['1', 'center', '–', '0.5000']


@pytest.mark.parametrize('score', [[], ['--score', 'mahalanobis'], ['--score', 'gaussian'],
                                   ['--score', 'cosine']])
def test_detect_reject_unknown_draws_unknowns_in_grey(tmp_path, capsys, monkeypatch, score):
    from gluon_ssdcl.commands import detect
    params, root = checkpoint(tmp_path)
    model = load_model(params, CTX)
    # a bank whose only class is far from every embedding: every detection is unknown
    far = np.full((4, 2), 1e3) + np.arange(8).reshape(4, 2)
    save_bank(make_bank(['cat', 'dog'], far, np.zeros(4, np.int64))._replace(
        params_sha256=file_sha256(model.checkpoint.path)), bank_path(model.checkpoint.path))
    drawn = {}

    def plot(img, bboxes, scores, ids, classes, thresh, colors=None):
        drawn.update(ids=np.asarray(ids), classes=list(classes), colors=colors)
        from matplotlib.figure import Figure
        return Figure()
    monkeypatch.setattr(detect, 'plot_detections', plot)
    image = os.path.join(root, 'JPEGImages', 'd.jpg')
    assert detect.main([image, '--params', params, '--reject-unknown', '--thresh', '0',
                        '-o', str(tmp_path / 'out')] + score) == 0
    assert drawn['classes'] == ['cat', 'dog', 'unknown'] and len(drawn['ids'])
    assert (drawn['ids'] == 2).all() and drawn['colors'] == {2: detect.UNKNOWN_COLOR}
    assert os.path.exists(tmp_path / 'out' / 'd_detections.png')
    with pytest.raises(SystemExit) as exit_info:
        detect.main([image, '--params', params, '--score', 'energy'])
    assert exit_info.value.code == 2 and '--score is the rule of --reject-unknown' in \
        capsys.readouterr().err


def test_export_carries_the_radii(tmp_path):
    from gluon_ssdcl.deploy.export import export_model
    params, _ = checkpoint(tmp_path)
    paths = export_model(params, str(tmp_path / 'out'), open_set=True)
    description = json.loads(open(paths['meta']).read())['open_set']
    bank = load_bank(bank_path(params))
    assert description['classes'] == ['cat', 'dog'] and description['unknown_id'] == UNKNOWN_ID
    assert description['radii'][0] == pytest.approx(bank.radii[0]) and description['radii'][1] \
        is None  # no dog in the training images
    np.testing.assert_allclose(np.load(paths['openset_centers'])[0], bank.centers[0], rtol=1e-6)
    # the scores, computed from the exported arrays alone as the description says
    record = description['scores']
    assert os.path.basename(paths['openset_scores']) == record['file']
    arrays = dict(np.load(paths['openset_scores']))
    embeddings = np.random.RandomState(0).randn(6, bank.centers.shape[1])
    z = embeddings @ arrays['weight'].T + arrays['bias']
    known = z[:, 1 + arrays['known']]
    energy = -np.log(np.exp(known).sum(axis=1))
    finite = [k for k in range(len(arrays['means'])) if np.isfinite(arrays['means'][k]).all()]
    assert finite == [0]  # only cat has training positives
    mahalanobis = np.min([[(e - arrays['means'][k]) @ arrays['precision'] @ (e - arrays['means'][k])
                           for k in finite] for e in embeddings], axis=1)
    unit = lambda rows: rows / np.linalg.norm(rows, axis=-1, keepdims=True)  # noqa: E731
    cosine = 1 - np.max(unit(embeddings) @ unit(arrays['means'][finite]).T, axis=1)
    gaussian = np.min([[((v - arrays['logit_means'][k]) @ arrays['logit_precisions'][k]
                         @ (v - arrays['logit_means'][k]) + arrays['logit_logdets'][k]) / 2
                        for k in finite] for v in z], axis=1)
    model = load_model(params, CTX)
    scorer = bank_scores(model.net, bank)
    for name, expected in (('energy', energy), ('cosine', cosine),
                           ('mahalanobis', mahalanobis), ('gaussian', gaussian)):
        np.testing.assert_allclose(unknown_score(scorer, name, embeddings), expected, rtol=1e-6)
        assert record['thresholds'][name] == pytest.approx(scorer.thresholds[name])


def test_commands_refuse_a_damaged_bank_in_one_line_naming_it(tmp_path, capsys):
    """A truncated bank file, or one with a NaN center of a class that has a radius: detect,
    register and export stop with one line naming the bank, exit 1."""
    from gluon_ssdcl.commands import detect
    from gluon_ssdcl.commands.export import main as export_main
    params, root = checkpoint(tmp_path)
    path = bank_path(params)
    image = os.path.join(root, 'JPEGImages', 'd.jpg')
    bank = make_bank(['cat', 'dog'], np.arange(8.0).reshape(4, 2), np.zeros(4, np.int64))
    bank = bank._replace(params_sha256=file_sha256(params))
    save_bank(bank, path)
    data = open(path, 'rb').read()
    nan_center = bank.centers.copy()
    nan_center[0, 1] = np.nan
    commands = [
        (detect.main, [image, '--params', params, '--label-by', 'center', '-o',
                       str(tmp_path / 'drawn')]),
        (register_main, ['--params', params, '--name', 'star', f'{image}:4,4,40,44']),
        (export_main, ['--params', params, '-o', str(tmp_path / 'exported'), '--open-set'])]
    for damage in ('truncated', 'NaN center'):
        if damage == 'truncated':
            open(path, 'wb').write(data[:len(data) // 2])
        else:
            save_bank(bank._replace(centers=nan_center), path)
        for main, argv in commands:
            assert main(argv) == 1, (damage, argv)
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and err.startswith('error: ') and path in err, err
            assert 'Traceback' not in err and ('non-finite' in err or 'readable' in err), err
    assert not os.path.exists(tmp_path / 'drawn') and not os.path.exists(tmp_path / 'exported')
