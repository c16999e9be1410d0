"""Tests of gluon_ssdcl.evaluation.errors: found and right-label rates of ground-truth boxes."""
import numpy as np

from gluon_ssdcl.evaluation.errors import box_outcomes, format_label_errors, label_errors
from gluon_ssdcl.evaluation.inference import ImageDetections


def image(ids, scores, boxes, gt_boxes, gt_ids):
    return ImageDetections(np.array(ids, np.float32), np.array(scores, np.float32),
                           np.array(boxes, np.float32).reshape(-1, 4), None,
                           np.array(gt_boxes, np.float32).reshape(-1, 4),
                           np.array(gt_ids, np.float32), None)


def test_box_outcomes_and_rates_by_hand():
    """Box A (class 0, 10 px tall): two hits, the higher-scoring one right; box B (class 1,
    50 px): hit only by a class-0 detection; box C (class 1, 50 px): only a detection of IoU
    0.4 and one below min_score, so not found; an image without detections: box D not found."""
    first = image(ids=[0, 1, 0, 1, 1], scores=[0.9, 0.5, 0.6, 0.8, 0.05],
                  boxes=[[0, 0, 10, 10], [1, 0, 11, 10], [100, 0, 120, 50],
                         [200, 0, 220, 20], [200, 0, 220, 50]],
                  gt_boxes=[[0, 0, 10, 10], [100, 0, 120, 50], [200, 0, 220, 50]],
                  gt_ids=[0, 1, 1])
    second = image(ids=[], scores=[], boxes=[], gt_boxes=[[0, 0, 5, 70]], gt_ids=[0])
    labels, predicted, heights = box_outcomes([first, second], min_score=0.1)
    np.testing.assert_array_equal(labels, [0, 1, 1, 0])
    np.testing.assert_array_equal(predicted, [0, 0, -1, -1])
    np.testing.assert_array_equal(heights, [10, 50, 50, 70])

    result = label_errors(labels, predicted, heights, num_classes=2, bins=(20, 60))
    assert result['all'] == {'boxes': 4, 'found': 0.5, 'right': 0.5}
    assert result['per_class'] == [{'boxes': 2, 'found': 0.5, 'right': 1.0},
                                   {'boxes': 2, 'found': 0.5, 'right': 0.0}]
    assert [(r['range'], r['boxes'], r['found'], r['right']) for r in result['per_height']] == [
        ((0, 20), 1, 1.0, 1.0), ((20, 60), 2, 0.5, 0.0), ((60, np.inf), 1, 0.0, None)]
    np.testing.assert_array_equal(result['confusion'], [[1, 0], [1, 0]])
    table = format_label_errors(result, ['a', 'b'])
    assert '| all | 4 | 0.500 | 0.500 |' in table and '| 60+ | 1 | 0.000 | – |' in table
    assert '| b | 100 | 0 |' in table  # b's one found box went to a


def test_box_outcomes_of_no_boxes():
    labels, predicted, heights = box_outcomes([image([0], [0.9], [[0, 0, 5, 5]], [], [])])
    assert len(labels) == len(predicted) == len(heights) == 0
    result = label_errors(labels, predicted, heights, num_classes=3)
    assert result['all'] == {'boxes': 0, 'found': None, 'right': None}
