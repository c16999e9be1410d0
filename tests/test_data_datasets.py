"""Tests of gluon_ssdcl.data.datasets: data sets, transforms and loaders."""
import logging
import os

import mxnet as mx
import numpy as np
import pytest
from gluoncv.data import VOCDetection
from gluoncv.data.transforms import image as timage
from gluoncv.model_zoo.ssd.anchor import SSDAnchorGenerator
from test_data_check import write_voc_folder

from gluon_ssdcl.data import digitset as digits
from gluon_ssdcl.data.datasets import (BadDatasetError, VOCLayoutDetection, get_dataloader,
                                       get_dataset, get_train_transform, get_val_transform)

ITEMS = {'a': [('cat', (5, 6, 30, 40))],
         'b': [('dog', (10, 10, 20, 20)), ('cat', (30, 5, 60, 45))],
         'c': [('dog', (40, 2, 62, 30))]}


@pytest.fixture
def custom(tmp_path):
    return write_voc_folder(tmp_path / 'custom', ITEMS, {'train': ['a', 'b'], 'val': ['c']})


def anchors_64():
    """Center-format anchors (1, N, 4) of two SSD feature maps (8x8 and 4x4) on a 64 px input."""
    maps = []
    for index, (sizes, step, cells) in enumerate((((16, 24), 8, 8), ((32, 48), 16, 4))):
        generator = SSDAnchorGenerator(index, (64, 64), sizes, (1, 2, 0.5), step, (cells, cells))
        generator.initialize()
        maps.append(generator(mx.nd.zeros((1, 1, cells, cells))))
    return mx.nd.concat(*maps, dim=1)


def test_custom_with_explicit_classes(custom):
    train, val = get_dataset('custom', custom, classes=['dog', 'cat'])
    assert (len(train), len(val)) == (2, 1) and train.classes == ('dog', 'cat')
    image, label = train[1]
    assert image.shape == (48, 64, 3)
    np.testing.assert_array_equal(label, [[10, 10, 20, 20, 0, 0], [30, 5, 60, 45, 1, 0]])
    np.testing.assert_array_equal(val[0][1], [[40, 2, 62, 30, 0, 0]])


def test_custom_with_classes_from_annotations(custom):
    train, val = get_dataset('custom', custom)
    assert train.classes == val.classes == ('cat', 'dog')
    np.testing.assert_array_equal(train[0][1], [[5, 6, 30, 40, 0, 0]])
    assert VOCDetection.CLASSES[0] == 'aeroplane'  # GluonCV's class attribute untouched


def test_custom_other_splits(tmp_path):
    root = write_voc_folder(tmp_path / 'c', ITEMS, {'trainval': ['a', 'b'], 'test': ['c']})
    train, val = get_dataset('custom', root, train_splits=['trainval'], val_splits=['test'])
    assert (len(train), len(val)) == (2, 1)


def test_classes_must_be_lower_case_and_distinct(custom):
    for classes in (['Cat', 'dog'], ['cat', 'cat'], []):
        with pytest.raises(ValueError, match='classes'):
            VOCLayoutDetection(custom, ['train'], classes)


def test_bad_names_and_arguments(custom):
    with pytest.raises(ValueError, match='unknown data set'):
        get_dataset('coco', custom)
    with pytest.raises(ValueError, match='root'):
        get_dataset('custom')
    with pytest.raises(ValueError, match='classes'):
        get_dataset('digits', custom, classes=['a'])
    with pytest.raises(ValueError, match='no such folder'):
        get_dataset('custom', custom + '-missing')
    with pytest.raises(ValueError, match='ImageSets/Main/'):
        get_dataset('custom', os.path.join(custom, 'JPEGImages'))


def test_custom_via_the_folder_given_to_the_generator(tmp_path):
    voc = write_voc_folder(tmp_path / 'generated' / 'VOC2007', ITEMS,
                           {'train': ['a', 'b'], 'val': ['c']})
    for root in (str(tmp_path / 'generated'), voc):
        train, val = get_dataset('custom', root)
        assert (len(train), len(val)) == (2, 1) and train.classes == ('cat', 'dog')
        assert str(train) == f'VOCLayoutDetection({voc}, train)'


def test_unknown_class_is_an_error(custom):
    with pytest.raises(BadDatasetError, match="unknown class 'dog'"):
        get_dataset('custom', custom, classes=['cat'])


def test_corrupt_image_raises_or_is_skipped(custom, caplog):
    bad = os.path.join(custom, 'JPEGImages', 'b.jpg')
    with open(bad, 'wb') as f:
        f.write(b'\xff\xd8 broken')
    with pytest.raises(BadDatasetError) as error:
        get_dataset('custom', custom)
    assert bad in str(error.value) and len(error.value.problems) == 1
    assert '--skip-bad' in str(error.value) and 'skip_bad=True' in str(error.value)
    with caplog.at_level(logging.WARNING, logger='gluon_ssdcl.data.datasets'):
        train, val = get_dataset('custom', custom, skip_bad=True)
    assert len(train) == 1 and len(val) == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert bad in record.getMessage()


def test_missing_split_cannot_be_skipped(custom):
    os.remove(os.path.join(custom, 'ImageSets', 'Main', 'val.txt'))
    with pytest.raises(BadDatasetError, match='val.txt'):
        get_dataset('custom', custom, skip_bad=True)


def test_box_a_pixel_outside_is_clipped(tmp_path):
    root = write_voc_folder(tmp_path / 'c', {'a': [('cat', (-1, 3, 64, 20))]},
                            {'train': ['a'], 'val': ['a']})
    train, _ = get_dataset('custom', root)
    np.testing.assert_array_equal(train[0][1], [[0, 3, 63, 20, 0, 0]])


def test_image_without_objects(tmp_path):
    root = write_voc_folder(tmp_path / 'c', {'a': [], 'b': [('cat', (5, 5, 20, 20))]},
                            {'train': ['a', 'b'], 'val': ['a']})
    train, val = get_dataset('custom', root)
    assert train[0][1].shape == (0, 6)
    anchors = anchors_64()
    n = anchors.shape[1]
    for augment in (False, True):
        transform = get_train_transform(64, 64, anchors, augment=augment)
        img, cls_targets, box_targets = transform(*train[0])
        assert img.shape == (3, 64, 64)
        assert cls_targets.shape == (n,) and box_targets.shape == (n, 4)
        assert cls_targets.abs().sum().asscalar() == 0 and box_targets.abs().sum().asscalar() == 0
    train_loader, val_loader = get_dataloader(train, val, 64, 64, anchors, batch_size=2)
    images, cls_targets, box_targets = next(iter(train_loader))
    assert images.shape == (2, 3, 64, 64) and cls_targets.shape == (2, n)
    images, labels = next(iter(val_loader))  # MXNet cannot slice a (1, 0, 6) label: padded
    assert images.shape == (1, 3, 64, 64) and labels.asnumpy().tolist() == [[[-1] * 6]]
    assert labels.slice_axis(axis=-1, begin=0, end=4).shape == (1, 1, 4)


def iou(anchors, box):
    """IoU of corner boxes (N, 4) with a box (4,) in continuous coordinates, as box_iou."""
    lt, rb = np.maximum(anchors[:, :2], box[:2]), np.minimum(anchors[:, 2:], box[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    union = np.prod(anchors[:, 2:] - anchors[:, :2], axis=1) + np.prod(box[2:] - box[:2]) - inter
    return inter / union


# 5 anchors with IoU >= 0.5; none (the best has 0.38)
@pytest.mark.parametrize('box', [(10, 14, 37, 40), (21, 18, 29, 33)])
def test_training_targets_match_a_hand_placed_box(tmp_path, box):
    box = np.array(box, dtype=float)
    root = write_voc_folder(tmp_path / 'c', {'a': [('cat', tuple(int(v) for v in box))]},
                            {'train': ['a'], 'val': ['a']}, size=(64, 64))
    train, val = get_dataset('custom', root, classes=['bird', 'cat'])
    anchors = anchors_64()
    train_loader, _ = get_dataloader(train, val, 64, 64, anchors, batch_size=1, augment=False)
    images, cls_targets, box_targets = next(iter(train_loader))
    assert images.shape == (1, 3, 64, 64)
    cls_targets, box_targets = cls_targets[0].asnumpy(), box_targets[0].asnumpy()

    centers = anchors[0].asnumpy()
    half = centers[:, 2:] / 2
    corners = np.concatenate([centers[:, :2] - half, centers[:, :2] + half], axis=1)
    overlaps = iou(corners, box)
    expected = (overlaps >= 0.5) | (overlaps == overlaps.max())
    assert 0 < expected.sum() < len(expected)
    np.testing.assert_array_equal(cls_targets > 0, expected)
    np.testing.assert_array_equal(cls_targets[expected], 2)  # 'cat' is class 1; 0 is background

    t, a = box_targets[expected], centers[expected]
    cx, cy = t[:, 0] * 0.1 * a[:, 2] + a[:, 0], t[:, 1] * 0.1 * a[:, 3] + a[:, 1]
    w, h = np.exp(t[:, 2] * 0.2) * a[:, 2], np.exp(t[:, 3] * 0.2) * a[:, 3]
    decoded = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    np.testing.assert_allclose(decoded, np.tile(box, (len(decoded), 1)), atol=1e-3)
    np.testing.assert_array_equal(box_targets[~expected], 0)


def test_loader_batches(custom):
    train, val = get_dataset('custom', custom)
    anchors = anchors_64()
    n = anchors.shape[1]
    train_loader, _ = get_dataloader(train, val, 64, 64, anchors, batch_size=2, num_workers=1)
    batches = list(train_loader)
    assert len(batches) == 1
    images, cls_targets, box_targets = batches[0]
    assert images.shape == (2, 3, 64, 64)
    assert cls_targets.shape == (2, n) and box_targets.shape == (2, n, 4)
    assert set(np.unique(cls_targets.asnumpy())) <= {-1, 0, 1, 2}
    train2 = VOCLayoutDetection(custom, ['train', 'val'], ('cat', 'dog'))
    images, labels = next(iter(get_dataloader(train2, train2, 32, 32, anchors, batch_size=3)[1]))
    assert images.shape == (3, 3, 32, 32) and labels.shape == (3, 2, 6)
    np.testing.assert_array_equal(labels[0, 1].asnumpy(), -1)  # padding of image a's label
    scale = np.array([32 / 64, 32 / 48] * 2)
    np.testing.assert_allclose(labels[0, 0, :4].asnumpy(), np.array([5, 6, 30, 40]) * scale,
                               rtol=1e-5)


def test_targets_made_in_the_training_process_equal_the_workers(custom):
    """get_dataloader(targets_ctx=...): the workers stack and pad, DeviceTargets makes the
    targets a batch at a time on that context; the same batches as targets made in the
    workers, under the same seeds (augmented, so nothing is cached)."""
    import random

    from gluon_ssdcl.data.datasets import DeviceTargets
    train, val = get_dataset('custom', custom)
    anchors = anchors_64()
    runs = []
    for targets_ctx in (None, mx.cpu()):
        loader, _ = get_dataloader(train, val, 64, 64, anchors, batch_size=1, augment=True,
                                   targets_ctx=targets_ctx)
        assert isinstance(loader, DeviceTargets) == (targets_ctx is not None)
        assert len(loader) == 2
        random.seed(3)
        np.random.seed(3)
        runs.append([[part.asnumpy() for part in batch] for batch in loader])
    positives = 0
    for want, got in zip(*runs):
        assert [part.shape for part in got] == [part.shape for part in want]
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
        positives += int((got[1] > 0).sum())
    assert positives > 0


def test_flips_are_off_by_default(custom, monkeypatch):
    calls = []
    real_flip = timage.random_flip

    def spy(*args, **kwargs):
        calls.append(1)
        return real_flip(*args, **kwargs)

    monkeypatch.setattr(timage, 'random_flip', spy)
    train, _ = get_dataset('custom', custom)
    anchors = anchors_64()
    for flip in (False, True):
        transform = get_train_transform(64, 64, anchors, flip=flip)
        for i in range(len(train)):
            transform(*train[i])
        assert len(calls) == (len(train) if flip else 0)
        calls.clear()


def test_transforms_check_anchors_and_keep_val_labels(custom):
    with pytest.raises(ValueError, match='anchors'):
        get_train_transform(64, 64, mx.nd.zeros((10, 4)))
    train, _ = get_dataset('custom', custom)
    image, label = get_val_transform(32, 24)(*train[0])
    assert image.shape == (3, 24, 32)
    np.testing.assert_allclose(label, [[2.5, 3, 15, 20, 0, 0]])


def test_digits(tmp_path):
    root = digits.ensure_digits(str(tmp_path / 'digits'), num_train=6, num_val=3, image_size=64,
                                progress=False)
    train, val = get_dataset('digits', root)
    assert (len(train), len(val)) == (6, 3) and train.classes == tuple('0123456789')
    assert len(get_dataset('digits', os.path.join(root, 'VOC2007'))[0]) == 6
    image, label = val[2]
    assert image.shape == (64, 64, 3) and label.shape[1] == 6
    assert set(label[:, 4]) <= set(range(10))


def test_voc(tmp_path):
    root = tmp_path / 'voc'
    write_voc_folder(root / 'VOC2007', {'a': [('dog', (1, 1, 9, 9))], 'b': [('cat', (2, 2, 9, 9))]},
                     {'trainval': ['a'], 'test': ['b']})
    write_voc_folder(root / 'VOC2012', {'c': [('person', (1, 1, 9, 9))]}, {'trainval': ['c']})
    train, val = get_dataset('voc', str(root))
    assert (len(train), len(val)) == (2, 1) and len(train.classes) == 20
    assert val[0][1][0, 4] == VOCDetection.CLASSES.index('cat')
