"""The crop with IoU constraints against GluonCV's, under the same seeds."""
import random

import numpy as np
import pytest
from gluoncv.data.transforms.experimental.bbox import random_crop_with_constraints as gluoncv_crop

from gluon_ssdcl.data.augment import random_crop_with_constraints


def boxes(rng, count, w, h):
    x0, y0 = rng.uniform(0, w - 2, count), rng.uniform(0, h - 2, count)
    x1, y1 = x0 + rng.uniform(1, w / 2, count), y0 + rng.uniform(1, h / 2, count)
    labels = rng.randint(0, 10, count)
    return np.stack([x0, y0, np.minimum(x1, w), np.minimum(y1, h), labels], axis=1)


@pytest.mark.parametrize('count', [0, 1, 3, 12])
def test_equal_to_gluoncv_with_the_same_seeds(count):
    rng = np.random.RandomState(count)
    for trial in range(40):
        w, h = int(rng.randint(40, 700)), int(rng.randint(40, 700))
        bbox = boxes(rng, count, w, h)
        results, states = [], []
        for crop in (gluoncv_crop, random_crop_with_constraints):
            random.seed(trial)
            np.random.seed(trial)
            results.append(crop(bbox, (w, h)))
            states.append((random.random(), np.random.uniform()))
        (want_box, want_crop), (got_box, got_crop) = results
        assert tuple(got_crop) == tuple(want_crop)
        np.testing.assert_array_equal(got_box, want_box)
        assert states[0] == states[1]  # both generators left where GluonCV leaves them


@pytest.mark.parametrize('count', [0, 2])
def test_expand_and_crop_equal_gluoncvs_expand_then_crop(count):
    import mxnet as mx
    from gluoncv.data.transforms import bbox as tbbox
    from gluoncv.data.transforms import image as timage

    from gluon_ssdcl.data.augment import expand_and_crop

    fill = [0.485 * 255, 0.456 * 255, 0.406 * 255]
    rng = np.random.RandomState(count)
    expanded = 0
    for trial in range(30):
        w, h = int(rng.randint(20, 90)), int(rng.randint(20, 90))
        img = mx.nd.array(rng.uniform(0, 255, (h, w, 3)))
        bbox = boxes(rng, count, w, h)
        random.seed(trial)
        np.random.seed(trial)
        want_img, want_box = img, bbox
        if np.random.uniform(0, 1) > 0.5:  # SSDDefaultTrainTransform's steps
            want_img, expand = timage.random_expand(img, fill=fill)
            want_box = tbbox.translate(bbox, x_offset=expand[0], y_offset=expand[1])
            expanded += 1
        height, width, _ = want_img.shape
        want_box, crop = gluoncv_crop(want_box, (width, height))
        want_img = mx.image.fixed_crop(want_img, *crop)
        random.seed(trial)
        np.random.seed(trial)
        got_img, got_box = expand_and_crop(img, bbox, fill)
        np.testing.assert_array_equal(got_img.asnumpy(), want_img.asnumpy())
        np.testing.assert_array_equal(got_box, want_box)
    assert 5 < expanded < 25


def test_the_augmented_transform_equals_gluoncvs_with_the_same_seeds():
    """SSDTrainTransform with flips (GluonCV's steps, its expansion and crop from
    data.augment) against GluonCV's SSDDefaultTrainTransform: the same images and targets."""
    import mxnet as mx
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

    from gluon_ssdcl.data.datasets import get_train_transform

    grid = (np.arange(8) + 0.5) / 8 * 64
    cx, cy = np.meshgrid(grid, grid)
    anchors = np.stack([cx.ravel(), cy.ravel(), np.full(64, 14.0), np.full(64, 20.0)], axis=1)
    anchors = mx.nd.array(anchors[None])
    ours = get_train_transform(64, 64, anchors, flip=True)
    theirs = SSDDefaultTrainTransform(64, 64, anchors)
    rng = np.random.RandomState(0)
    positives = 0
    for trial in range(12):
        w, h = int(rng.randint(40, 120)), int(rng.randint(40, 120))
        img = mx.nd.array(rng.randint(0, 256, (h, w, 3)), dtype='uint8')
        label = boxes(rng, 1 + trial % 3, w, h)
        outputs = []
        for transform in (theirs, ours):
            random.seed(trial)
            np.random.seed(trial)
            outputs.append([x.asnumpy() for x in transform(img, label)])
        for want, got in zip(*outputs):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        positives += int((outputs[1][1] > 0).sum())
    assert positives > 0
