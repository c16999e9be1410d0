"""Where a detector's AP goes: for every ground-truth box, whether a detection finds it and
whether the best-scoring detection that finds it has the right class, by class and by size."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from gluoncv.utils.bbox import bbox_iou

from .inference import IOU_THRESH, ImageDetections

__all__ = ['HEIGHT_BINS', 'box_outcomes', 'label_errors', 'format_label_errors']

# box heights (input pixels) at which the size table is cut
HEIGHT_BINS = (20, 30, 45, 65, 100)


def box_outcomes(images: Sequence[ImageDetections], min_score: float = 0.1,
                 iou_thresh: float = IOU_THRESH):
    """What the detector made of each ground-truth box.

    A box is found when a detection of score >= ``min_score`` overlaps it with IoU >=
    ``iou_thresh``; its predicted class is that of the highest-scoring such detection.

    Parameters
    ----------
    images : sequence of ImageDetections
        From :func:`~gluon_ssdcl.evaluation.inference.collect_detections`.

    Returns
    -------
    labels : numpy.ndarray of int64, (M,)
        The boxes' classes, over all images in order.
    predicted : numpy.ndarray of int64, (M,)
        The predicted class, -1 for a box not found.
    heights : numpy.ndarray of float64, (M,)
        Box heights in input pixels.
    """
    labels, predicted, heights = [], [], []
    for image in images:
        keep = image.scores >= min_score
        boxes, ids, scores = image.bboxes[keep], image.ids[keep], image.scores[keep]
        gt = np.asarray(image.gt_bboxes, np.float64).reshape(-1, 4)
        iou = bbox_iou(gt, boxes.astype(np.float64)) if len(boxes) and len(gt) else \
            np.zeros((len(gt), 0))
        for row in iou:
            hits = np.flatnonzero(row >= iou_thresh)
            predicted.append(int(ids[hits[np.argmax(scores[hits])]]) if len(hits) else -1)
        labels.extend(np.asarray(image.gt_ids).astype(np.int64).tolist())
        heights.extend((gt[:, 3] - gt[:, 1]).tolist())
    return (np.array(labels, np.int64), np.array(predicted, np.int64),
            np.array(heights, np.float64))


def _rates(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Count, share found and share right among the found, of some boxes (None when empty)."""
    found = predicted >= 0
    return {'boxes': int(len(labels)),
            'found': float(found.mean()) if len(labels) else None,
            'right': float((predicted[found] == labels[found]).mean()) if found.any() else None}


def label_errors(labels: np.ndarray, predicted: np.ndarray, heights: np.ndarray,
                 num_classes: int, bins: Sequence[float] = HEIGHT_BINS) -> dict:
    """Found and right-label rates of :func:`box_outcomes`, overall, per class and per height.

    Returns
    -------
    dict
        ``all``, ``per_class`` (one per class) and ``per_height`` (one per height range, a
        ``range`` key ``(low, high)`` added) hold ``boxes``, ``found`` and ``right`` (the share
        of found boxes labelled right); ``confusion`` is the ``(C, C)`` count of found boxes by
        true (rows) and predicted class.
    """
    edges = [0.0, *bins, np.inf]
    per_height = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (heights >= low) & (heights < high)
        per_height.append({'range': (low, high), **_rates(labels[inside], predicted[inside])})
    found = predicted >= 0
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels[found], predicted[found]), 1)
    return {'all': _rates(labels, predicted),
            'per_class': [_rates(labels[labels == c], predicted[labels == c])
                          for c in range(num_classes)],
            'per_height': per_height, 'confusion': confusion}


def _cell(value) -> str:
    return '–' if value is None else f'{value:.3f}'


def format_label_errors(result: dict, classes: Sequence[str]) -> str:
    """Markdown tables of :func:`label_errors`: per class, per height, and the confusion in
    percent of each true class's found boxes."""
    lines = ['| class | boxes | found | right label |', '| --- | --- | --- | --- |']
    rows = [('all', result['all'])] + list(zip(classes, result['per_class']))
    lines += [f"| {name} | {r['boxes']} | {_cell(r['found'])} | {_cell(r['right'])} |"
              for name, r in rows]
    lines += ['', '| box height (px) | boxes | found | right label |', '| --- | --- | --- | --- |']
    for r in result['per_height']:
        low, high = r['range']
        span = f'{low:.0f}+' if np.isinf(high) else f'{low:.0f}–{high:.0f}'
        lines.append(f"| {span} | {r['boxes']} | {_cell(r['found'])} | {_cell(r['right'])} |")
    confusion = result['confusion']
    share = 100 * confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    lines += ['', '| true \\ predicted | ' + ' | '.join(classes) + ' |',
              '| --- |' + ' --- |' * len(classes)]
    lines += [f'| {name} | ' + ' | '.join(f'{v:.0f}' for v in row) + ' |'
              for name, row in zip(classes, share)]
    return '\n'.join(lines)
