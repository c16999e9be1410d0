"""Detections on images with a trained network: :func:`read_image`, :func:`detect_image` (the
image resized and normalised as in validation, :func:`~.inputs.preprocess`; boxes scaled back
to the image's pixels) and the k-NN gallery of a checkpoint's training images
(:func:`training_gallery`). The command that draws them is ``gluon-ssdcl detect``.
"""
from __future__ import annotations

import logging
import os
from typing import NamedTuple, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from ..data.datasets import get_dataset
from ..data.voc_check import check_image, clip_boxes
from ..evaluation.inference import build_gallery
from ..utils.errors import one_line
from .inputs import preprocess

__all__ = ['Detections', 'read_image', 'detect_image', 'training_gallery']

logger = logging.getLogger(__name__)

GALLERY_BATCH_SIZE = 16
GALLERY_SIZE = 20000  # cap on the gallery's embeddings, as evaluate's --gallery-size default


class Detections(NamedTuple):
    """The kept detections of one image (padding removed), boxes in the image's pixels."""
    ids: np.ndarray  # (K,) class ids
    scores: np.ndarray  # (K,)
    bboxes: np.ndarray  # (K, 4) [xmin, ymin, xmax, ymax]
    embeddings: Optional[np.ndarray]  # (K, D), when the net returns them


def read_image(path: str) -> mx.nd.NDArray:
    """The image at ``path`` as an (H, W, 3) uint8 RGB NDArray.

    Raises
    ------
    ValueError
        Naming the file, when it is missing or cannot be decoded completely (a truncated JPEG
        is refused, where OpenCV alone would fill it with grey).
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such image file")
    _, problem = check_image(path)
    if problem:
        raise ValueError(f"{path}: {problem}")
    try:
        return mx.image.imread(path)
    except mx.base.MXNetError as err:
        raise ValueError(f"{path}: image cannot be decoded ({one_line(err)})") from err


def detect_image(net, img: mx.nd.NDArray, ctx: Sequence[mx.Context]) -> Detections:
    """Run ``net`` on one image resized to ``net.base_size`` (:func:`~.inputs.preprocess`);
    boxes scaled back and clipped.

    Parameters
    ----------
    net : SSDCenter
        In inference; with embeddings switched on (``net.set_embeddings(infer=True)``) the
        result carries them.
    img : NDArray, (H, W, 3) uint8
    ctx : list of mx.Context
        The image runs on the first.

    Returns
    -------
    Detections
        Rows with class id >= 0, in the net's order (by score).
    """
    height, width = img.shape[:2]
    x, scale = preprocess(img, net.base_size)
    outputs = [o[0].asnumpy() for o in net(mx.nd.array(x, ctx=ctx[0]))]
    kept = outputs[0][:, 0] >= 0
    return Detections(outputs[0][kept, 0].astype(np.int64), outputs[1][kept, 0],
                      clip_boxes(outputs[2][kept] * scale, width, height),
                      outputs[3][kept] if len(outputs) > 3 else None)


def training_gallery(net, meta: dict, ctx: Sequence[mx.Context], num_images: int,
                     max_size: int = GALLERY_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """The k-NN gallery of the first ``num_images`` training images of a checkpoint's data set
    (:func:`~gluon_ssdcl.evaluation.inference.build_gallery`).

    Parameters
    ----------
    net : SSDCenter
    meta : dict
        Checkpoint metadata: ``dataset``, ``dataset_root``, ``classes`` and ``seed``.
    ctx : list of mx.Context
    num_images : int
    max_size : int
        Cap on the embeddings.

    Returns
    -------
    embeddings : numpy.ndarray, (G, D)
    labels : numpy.ndarray of int64, (G,)
        0-based class ids.
    """
    dataset = meta['dataset']
    train_dataset, _ = get_dataset(dataset, meta.get('dataset_root'), skip_bad=True,
                                   classes=meta['classes'] if dataset == 'custom' else None)
    return build_gallery(net, train_dataset.take(num_images), ctx, GALLERY_BATCH_SIZE, max_size,
                         meta.get('seed', 0))
