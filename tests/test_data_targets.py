"""ssd_targets against GluonCV's SSDTargetGenerator, on the default network's anchors."""
import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo.ssd.target import SSDTargetGenerator

from gluon_ssdcl.data.targets import ssd_targets
from gluon_ssdcl.model.zoo import get_model


@pytest.fixture(scope='module')
def anchors():
    net = get_model('ssd_256_small_center_digits')
    net.initialize()
    with mx.autograd.train_mode():
        return net(mx.nd.zeros((1, 3, 256, 256)))[2]  # (1, 5456, 4)


def gluoncv_targets(anchors, labels):
    cls, box, _ = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2),
                                     negative_mining_ratio=-1)(
        anchors, None, mx.nd.array(labels[:, :, :4]), mx.nd.array(labels[:, :, 4:5]))
    cls, box = cls.asnumpy(), box.asnumpy()
    box[cls <= 0] = 0  # offsets of the positives only, as ours
    return cls, box


def random_labels(rng, images, rows):
    """(images, rows, 5) labels: boxes of 4 to 200 px in a 256 px image, some rows padding."""
    labels = np.full((images, rows, 5), -1, np.float32)
    for i in range(images):
        count = rng.integers(0, rows + 1)
        size = rng.uniform(4, 200, (count, 2))
        corner = rng.uniform(0, 256 - size)
        labels[i, :count, :4] = np.concatenate([corner, corner + size], axis=1)
        labels[i, :count, 4] = rng.integers(0, 10, count)
    return labels


def test_equal_to_gluoncv_on_random_boxes(anchors):
    labels = random_labels(np.random.default_rng(0), 24, 6)
    labels[0] = -1  # an image of padding alone: all background
    labels[1, 1] = labels[1, 0]  # the same box twice: two anchors, one each
    labels[1, 1, 4] = (labels[1, 0, 4] + 1) % 10
    cls, box = ssd_targets(anchors, labels)
    want_cls, want_box = gluoncv_targets(anchors, labels)
    assert (cls > 0).sum() > 100 and not cls[0].any()
    np.testing.assert_array_equal(cls, want_cls)
    np.testing.assert_allclose(box, want_box, rtol=1e-5, atol=1e-5)
    assert len(set(cls[1][cls[1] > 0])) >= 2  # both copies of the box got an anchor


def test_a_box_equal_to_an_anchor_and_its_ties(anchors):
    # an anchor's own box: IoU 1 with it, and equal overlaps with its neighbours of the same shape
    center = anchors[0, 100].asnumpy()
    box = np.concatenate([center[:2] - center[2:] / 2, center[2:] / 2 + center[:2]])
    labels = np.array([[[*box, 3], [*(box + 0.25), 7], [-1] * 5]], np.float32)
    cls, box_targets = ssd_targets(anchors, labels)
    want_cls, want_box = gluoncv_targets(anchors, labels)
    np.testing.assert_array_equal(cls, want_cls)
    np.testing.assert_allclose(box_targets, want_box, rtol=1e-5, atol=1e-5)
    assert cls[0, 100] == 4 and np.abs(box_targets[0, 100]).max() < 1e-5


def test_hand_computed_case():
    # anchor 0 is (0, 0, 2, 2), anchor 1 (1, 0, 3, 2); the box (0, 0, 2, 1) overlaps them by
    # 2/4 and 1/5: it takes anchor 0 (its best), and anchor 1 stays background (0.2 < 0.5)
    anchors = mx.nd.array([[[1, 1, 2, 2], [2, 1, 2, 2]]])  # centers and sizes
    labels = np.array([[[0, 0, 2, 1, 5], [-1, -1, -1, -1, -1]]], np.float32)  # class 5
    cls, box = ssd_targets(anchors, labels)
    np.testing.assert_array_equal(cls, [[6, 0]])
    # the box's center (1, 0.5) and size (2, 1) against the anchor's (1, 1) and (2, 2):
    # 0 / 2 / 0.1, -0.5 / 2 / 0.1, log(2 / 2) / 0.2, log(1 / 2) / 0.2
    np.testing.assert_allclose(box, [[[0, -2.5, 0, np.log(0.5) / 0.2], [0, 0, 0, 0]]],
                               rtol=1e-6)
