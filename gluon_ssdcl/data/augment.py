"""GluonCV's SSD crop with IoU constraints, its trials evaluated together: the same crops.

GluonCV's ``random_crop_with_constraints`` tries up to 50 random crops for each of its 6
IoU constraints and computes the IoU of every try with the boxes on its own; on the digits
that was about 250 NumPy calls an image, 70% of the augmentation's time. Here the 50 tries of
a constraint are drawn, their IoUs computed in one ``bbox_iou`` call, and the generator is
then set back and advanced by exactly the tries GluonCV would have drawn (up to its first
success), so that the crop and the state of both random generators equal GluonCV's (tested
under the same seeds).
"""
import random

import numpy as np
from gluoncv.data.transforms.bbox import crop as bbox_crop
from gluoncv.utils import bbox_iou

__all__ = ['random_crop_with_constraints']

CONSTRAINTS = ((0.1, None), (0.3, None), (0.5, None), (0.7, None), (0.9, None), (None, 1))


def _draw_crop(w, h, min_scale, max_scale, max_aspect_ratio):
    """One try, with GluonCV's draws in GluonCV's order: ``(left, top, width, height)``."""
    scale = random.uniform(min_scale, max_scale)
    aspect_ratio = random.uniform(max(1 / max_aspect_ratio, scale * scale),
                                  min(max_aspect_ratio, 1 / (scale * scale)))
    crop_h = int(h * scale / np.sqrt(aspect_ratio))
    crop_w = int(w * scale * np.sqrt(aspect_ratio))
    crop_t = random.randrange(h - crop_h)
    crop_l = random.randrange(w - crop_w)
    return crop_l, crop_t, crop_w, crop_h


def random_crop_with_constraints(bbox, size, min_scale=0.3, max_scale=1, max_aspect_ratio=2,
                                 constraints=None, max_trial=50):
    """GluonCV's ``experimental.bbox.random_crop_with_constraints``, the same arguments and
    results: ``(cropped bbox (M', 4+), (x_offset, y_offset, width, height))``."""
    constraints = CONSTRAINTS if constraints is None else constraints
    w, h = size
    draw = (w, h, min_scale, max_scale, max_aspect_ratio)
    candidates = [(0, 0, w, h)]
    for min_iou, max_iou in constraints:
        min_iou = -np.inf if min_iou is None else min_iou
        max_iou = np.inf if max_iou is None else max_iou
        if len(bbox) == 0:  # GluonCV returns the first try
            return bbox, _draw_crop(*draw)
        state = random.getstate()
        crops = np.array([_draw_crop(*draw) for _ in range(max_trial)])
        corners = np.concatenate([crops[:, :2], crops[:, :2] + crops[:, 2:]], axis=1)
        iou = bbox_iou(bbox, corners)  # (M, max_trial)
        good = np.flatnonzero((min_iou <= iou.min(axis=0)) & (iou.max(axis=0) <= max_iou))
        random.setstate(state)
        for _ in range(good[0] + 1 if len(good) else max_trial):
            _draw_crop(*draw)
        if len(good):
            candidates.append(tuple(int(v) for v in crops[good[0]]))
    while candidates:
        crop = candidates.pop(np.random.randint(0, len(candidates)))
        new_bbox = bbox_crop(bbox, crop, allow_outside_center=False)
        if new_bbox.size < 1:
            continue
        return new_bbox, (crop[0], crop[1], crop[2], crop[3])
    return bbox, (0, 0, w, h)
