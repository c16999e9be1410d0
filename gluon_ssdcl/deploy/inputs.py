"""The input of a gluon_ssdcl network and of its export: an image resized and normalised as in
validation (GluonCV's ``SSDDefaultValTransform``), and the factors that scale the boxes back."""
from __future__ import annotations

from typing import Tuple, Union

import mxnet as mx
import numpy as np
from gluoncv.data.transforms import image as timage

__all__ = ['IMAGE_MEAN', 'IMAGE_STD', 'RESIZE_INTERP', 'preprocess']

# GluonCV's SSDDefaultValTransform: on RGB pixels scaled to [0, 1]
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
RESIZE_INTERP = 9  # as SSDDefaultValTransform: area to shrink, bicubic to enlarge


def preprocess(image, meta_or_base_size: Union[dict, int]) -> Tuple[np.ndarray, np.ndarray]:
    """An RGB image as the input of a network or of its export, and the factors that take its
    boxes back to the image.

    The image is resized to ``S x S`` as GluonCV's ``SSDDefaultValTransform`` does
    (``imresize`` with ``interp=9``); then, for the normalised input, scaled to [0, 1], minus
    :data:`IMAGE_MEAN`, over :data:`IMAGE_STD`, in NCHW.

    Parameters
    ----------
    image : numpy.ndarray or NDArray, (H, W, 3) uint8
        RGB (:func:`~gluon_ssdcl.deploy.read_image`).
    meta_or_base_size : dict or int
        An export's ``<name>-meta.json`` record (its ``base_size`` S, and ``preprocess``: the
        graph normalises the pixels itself), or the network's ``base_size`` (normalised input).

    Returns
    -------
    x : numpy.ndarray of float32
        ``(1, 3, S, S)`` normalised; for an export with ``preprocess`` true ``(1, S, S, 3)``
        RGB pixels in 0..255.
    scale : numpy.ndarray of float64, (4,)
        ``(W / S, H / S, W / S, H / S)``: boxes ``[xmin, ymin, xmax, ymax]`` in the input's
        pixels, times ``scale``, are in the image's.

    Raises
    ------
    ValueError
        For an image that is not (H, W, 3) uint8.
    """
    if isinstance(meta_or_base_size, dict):
        size, nhwc = meta_or_base_size['base_size'], meta_or_base_size['preprocess']
    else:
        size, nhwc = meta_or_base_size, False
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} "
                         f"{tuple(image.shape)}")
    if not isinstance(image, mx.nd.NDArray):
        image = mx.nd.array(image, dtype='uint8')
    height, width = image.shape[:2]
    resized = timage.imresize(image, size, size, interp=RESIZE_INTERP)
    if nhwc:
        x = resized.astype('float32').expand_dims(0)
    else:
        x = mx.nd.image.normalize(mx.nd.image.to_tensor(resized), mean=IMAGE_MEAN,
                                  std=IMAGE_STD).expand_dims(0)
    return x.asnumpy(), np.array([width, height, width, height], np.float64) / size
