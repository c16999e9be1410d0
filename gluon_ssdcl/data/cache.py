"""Training targets computed once and held in memory, for training without augmentation.

Without augmentation every epoch sees the same resized image and the same targets, so the
loader's work (decode, resize, match anchors) can be done once.
The images are kept as uint8 in the network's (3, H, W) layout and normalised a batch at a time.
"""
import logging

import mxnet as mx
import numpy as np

from ..utils.progress import progress
from .sampler import ShardSampler

__all__ = ['TargetCache', 'cache_targets', 'cache_nbytes', 'cached_loader']

logger = logging.getLogger(__name__)


class TargetCache(mx.gluon.data.Dataset):
    """Resized images and their SSD targets, in memory.

    Parameters
    ----------
    images : numpy.ndarray
        ``(L, 3, H, W)`` uint8.
    cls_targets : numpy.ndarray
        ``(L, N)`` float32: 0 background, -1 ignored, ``k + 1`` class k.
    box_targets : numpy.ndarray
        ``(L, N, 4)`` float32, encoded offsets.
    """

    def __init__(self, images: np.ndarray, cls_targets: np.ndarray, box_targets: np.ndarray):
        if not len(images) == len(cls_targets) == len(box_targets):
            raise ValueError(f'lengths differ: {len(images)} images, {len(cls_targets)} and '
                             f'{len(box_targets)} targets')
        self.images, self.cls_targets, self.box_targets = images, cls_targets, box_targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int):
        return self.images[idx], self.cls_targets[idx], self.box_targets[idx]

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.cls_targets.nbytes + self.box_targets.nbytes


def cache_nbytes(num_images: int, width: int, height: int, num_anchors: int) -> int:
    """Memory a :class:`TargetCache` of ``num_images`` takes, in bytes."""
    return num_images * (height * width * 3 + num_anchors * 5 * 4)


def cache_targets(dataset, transform, num_workers: int = 0, batch_size: int = 32
                  ) -> TargetCache:
    """Run a deterministic ``transform`` over ``dataset`` once and keep the results.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image (H0, W0, 3) uint8, label (M, 6))``.
    transform : SSDTrainTransform
        Makes ``(image (H, W, 3) uint8, ...)`` items that its ``batchify`` turns into
        ``(images (B, H, W, 3), cls_targets (B, N), box_targets (B, N, 4))``: e.g.
        :func:`~gluon_ssdcl.data.datasets.get_train_transform` with ``augment=False,
        normalize=False, batch_targets=True``.
    num_workers : int
        Worker processes for the one pass; 0 works in this process.
    batch_size : int
        Images handed over by a worker at a time.

    Returns
    -------
    TargetCache
    """
    loader = mx.gluon.data.DataLoader(dataset.transform(transform), batch_size, shuffle=False,
                                      batchify_fn=transform.batchify, last_batch='keep',
                                      num_workers=num_workers)
    parts, start = None, 0
    for images, cls_targets, box_targets in progress(loader, desc='targets', leave=False):
        batch = (images.transpose((0, 3, 1, 2)), cls_targets, box_targets)
        if parts is None:  # written in place: each array of the cache is touched once
            parts = [np.empty((len(dataset),) + part.shape[1:], part.dtype) for part in batch]
        for part, array in zip(parts, batch):
            array.copyto(mx.nd.from_numpy(part[start:start + len(array)], zero_copy=True))
        start += len(images)
    if parts is None:
        raise ValueError(f'no images to cache in {dataset}')
    mx.nd.waitall()
    cache = TargetCache(*parts)
    logger.info("targets of %d images computed once, %.0f MiB in memory", len(cache),
                cache.nbytes / 2**20)
    return cache


def cached_loader(cache: TargetCache, batch_size: int, normalize, shard=(0, 1)
                  ) -> mx.gluon.data.DataLoader:
    """Shuffled batches of ``cache`` (the last incomplete one left out, in this process); of a
    distributed job's worker ``shard = (rank, workers)``: its part of each global batch
    (:class:`~gluon_ssdcl.data.sampler.ShardSampler`).

    ``normalize`` maps ``(B, 3, H, W)`` uint8 NumPy images to the network's normalised float32
    input (:meth:`~gluon_ssdcl.data.datasets.SSDTrainTransform.normalize_batch`). Yields
    ``(image (B, 3, H, W), cls_targets (B, N), box_targets (B, N, 4))``.
    """
    def batchify(items):
        images, cls, box = (np.stack(part) for part in zip(*items))
        return normalize(images), mx.nd.array(cls), mx.nd.array(box)

    return mx.gluon.data.DataLoader(
        cache, batch_sampler=ShardSampler(len(cache), batch_size, *shard), batchify_fn=batchify,
        num_workers=0)
