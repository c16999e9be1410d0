"""How well a network's anchors fit a data set's boxes: the share of ground-truth boxes whose best
anchor overlaps them with an IoU of at least 0.5 (SSD's matching threshold), per class."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
from gluoncv.utils.bbox import bbox_iou

from ..utils.arrays import as_numpy
from .inference import net_anchors

__all__ = ['best_anchor_iou', 'anchor_coverage', 'dataset_coverage', 'format_coverage']


def best_anchor_iou(anchors, boxes) -> Tuple[np.ndarray, np.ndarray]:
    """The IoU of each box with its best anchor, and how many anchors reach IoU 0.5 with it.

    Parameters
    ----------
    anchors : array-like, (N, 4)
        Corner boxes ``xmin, ymin, xmax, ymax``, in the same pixels as ``boxes``.
    boxes : array-like, (M, 4)
        Corner boxes.

    Returns
    -------
    best : numpy.ndarray, (M,)
    matched : numpy.ndarray of int64, (M,)
    """
    anchors, boxes = as_numpy(anchors).reshape(-1, 4), as_numpy(boxes).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0), np.zeros(0, np.int64)
    iou = bbox_iou(boxes.astype(np.float64), anchors.astype(np.float64))
    return iou.max(axis=1), (iou >= 0.5).sum(axis=1).astype(np.int64)


def anchor_coverage(best: np.ndarray, labels: np.ndarray, num_classes: int,
                    thresh: float = 0.5) -> dict:
    """The share of boxes whose best anchor IoU reaches ``thresh``, overall and per class.

    Parameters
    ----------
    best : numpy.ndarray, (M,)
        Each box's best anchor IoU (:func:`best_anchor_iou`).
    labels : numpy.ndarray of int, (M,)
        0-based class ids.
    num_classes : int
    thresh : float

    Returns
    -------
    dict
        ``all`` (None without boxes), ``per_class`` (a share per class, None for a class
        without boxes) and ``boxes`` (the count per class).
    """
    best, labels = np.asarray(best), np.asarray(labels, np.int64)
    covered = best >= thresh
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=covered, minlength=num_classes)
    return {'all': float(covered.mean()) if len(best) else None,
            'per_class': [float(h / c) if c else None for h, c in zip(hits, counts)],
            'boxes': counts.tolist()}


def dataset_coverage(net, dataset: Iterable, num_classes: int,
                     max_images: Optional[int] = None) -> dict:
    """:func:`anchor_coverage` of ``net``'s anchors over a data set's boxes, each image resized to
    the network's square input as in validation; also the mean count of anchors of IoU ≥ 0.5
    per box (``matched_per_box``).

    Parameters
    ----------
    net : SSDCenter
        Initialised (its anchors depend only on its shape).
    dataset : sequence of (image (H, W, 3), label (M, 5+))
        Untransformed items of a detection data set (label columns: corners, class id).
    num_classes : int
    max_images : int, optional
    """
    size = net.base_size
    anchors = net_anchors(net).asnumpy().reshape(-1, 4)
    corners = np.concatenate([anchors[:, :2] - anchors[:, 2:] / 2,
                              anchors[:, :2] + anchors[:, 2:] / 2], axis=1)
    best, matched, labels = [], [], []
    for index, (image, label) in enumerate(dataset):
        if max_images is not None and index >= max_images:
            break
        height, width = image.shape[:2]
        boxes = np.asarray(label[:, :4], np.float64) * np.tile([size / width, size / height], 2)
        iou, count = best_anchor_iou(corners, boxes)
        best.append(iou)
        matched.append(count)
        labels.append(np.asarray(label[:, 4], np.int64))
    best, matched = np.concatenate(best), np.concatenate(matched)
    result = anchor_coverage(best, np.concatenate(labels), num_classes)
    result['matched_per_box'] = float(matched.mean()) if len(matched) else None
    return result


def format_coverage(result: dict, classes: Sequence[str]) -> str:
    """The coverage as a Markdown table: a row per class, then all boxes."""
    lines = ['| class | boxes | best-anchor IoU ≥ 0.5 |', '| --- | --- | --- |']
    for name, count, share in zip(classes, result['boxes'], result['per_class']):
        lines.append(f"| {name} | {count} | {'–' if share is None else f'{share:.3f}'} |")
    lines.append(f"| all | {sum(result['boxes'])} | {result['all']:.3f} |")
    return '\n'.join(lines)
