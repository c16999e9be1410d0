"""Tests of gluon_ssdcl.evaluation.coverage: the share of boxes an anchor fits, by hand."""
import mxnet as mx
import numpy as np
import pytest

from gluon_ssdcl import get_model, initialize_params
from gluon_ssdcl.evaluation.coverage import anchor_coverage, best_anchor_iou, dataset_coverage
from gluon_ssdcl.evaluation.inference import net_anchors

ANCHORS = np.array([[0, 0, 10, 10], [0, 0, 20, 20]], np.float32)
# IoU with the anchors: 1 and 100/400; 100/196 = 0.51 and 196/400 = 0.49; 0 and 0
BOXES = np.array([[0, 0, 10, 10], [0, 0, 14, 14], [30, 30, 40, 40]], np.float32)


def test_best_anchor_iou_by_hand():
    best, matched = best_anchor_iou(ANCHORS, BOXES)
    np.testing.assert_allclose(best, [1.0, 100 / 196, 0.0], rtol=1e-6)
    assert matched.tolist() == [1, 1, 0]
    assert best_anchor_iou(ANCHORS, np.zeros((0, 4)))[0].shape == (0,)


def test_anchor_coverage_by_hand():
    best, _ = best_anchor_iou(ANCHORS, BOXES)
    result = anchor_coverage(best, np.array([0, 1, 1]), num_classes=3)
    assert result['all'] == pytest.approx(2 / 3)
    assert result['per_class'] == [1.0, 0.5, None]
    assert result['boxes'] == [1, 2, 0]
    assert anchor_coverage(best, np.array([0, 1, 1]), 3, thresh=0.6)['per_class'][1] == 0.0


def test_dataset_coverage_scales_boxes_to_the_network_input():
    net = get_model('ssd_64_tiny_center_custom', classes=['a', 'b'])
    initialize_params(net, [mx.cpu()])
    box = np.array([[0, 0, 40, 40, 0]], np.float32)  # 40 px of a 128 px image: 20 of 64
    image = np.zeros((128, 128, 3), np.uint8)
    got = dataset_coverage(net, [(image, box), (image[:64], box)], 2)
    anchors = net_anchors(net).asnumpy().reshape(-1, 4)  # centre, size
    corners = np.hstack([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2])
    # in the 64 px input: 20 x 20 px, and 20 x 40 px for the 128 x 64 image
    best, matched = best_anchor_iou(corners, np.array([[0, 0, 20, 20], [0, 0, 20, 40]]))
    assert got['boxes'] == [2, 0]
    assert got['all'] == pytest.approx(np.mean(best >= 0.5))
    assert got['matched_per_box'] == pytest.approx(matched.mean())
    assert matched[0] != matched[1]  # the scaling is seen
