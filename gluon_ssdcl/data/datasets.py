"""Detection data sets (digits, Pascal VOC, any VOC-layout folder), SSD transforms and loaders.

Items are GluonCV's: ``(image (H, W, 3) uint8 NDArray, label (M, 6) float)`` with label rows
``[xmin, ymin, xmax, ymax, class_id, difficult]`` in 0-based pixels; M may be 0.
"""
from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from gluoncv.data import VOCDetection
from gluoncv.data.batchify import Pad, Stack
from gluoncv.data.transforms import bbox as tbbox
from gluoncv.data.transforms import experimental
from gluoncv.data.transforms import image as timage
from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform, SSDDefaultValTransform

from . import digitset as digits
from .augment import expand_and_crop
from .cache import cache_nbytes, cache_targets, cached_loader
from .sampler import ShardSampler
from .targets import ssd_targets
from .voc_check import (ERROR, Problem, annotation_path, box_problem, check_voc_folder, clip_boxes,
                        normalize_name, read_split, resolve_voc_root)

__all__ = ['BadDatasetError', 'VOCLayoutDetection', 'SSDTrainTransform', 'get_dataset',
           'read_class_names', 'get_train_transform', 'get_val_transform', 'DeviceTargets',
           'get_dataloader', 'get_val_loader']

logger = logging.getLogger(__name__)

VOC_ROOT = os.path.join('~', '.mxnet', 'datasets', 'voc')


class BadDatasetError(ValueError):
    """A data set folder has errors; the message lists every one with its file.

    Attributes
    ----------
    problems : list of Problem
    """

    def __init__(self, root: str, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = '\n'.join(f'  {p}' for p in self.problems)
        super().__init__(f'{len(self.problems)} problem(s) in the data set at {root}:\n{lines}\n'
                         f'Fix them, or leave those images out (--skip-bad, or skip_bad=True).')


class VOCLayoutDetection(VOCDetection):
    """A Pascal VOC-layout folder with its own classes, read by GluonCV's VOCDetection.

    Unlike VOCDetection, the classes belong to the instance (not to the class attribute
    CLASSES) and may be any lower-case names (digits too), an image without objects gets a
    ``(0, 6)`` label (not ``(0,)``), and a box up to a pixel outside the image is clipped
    rather than dropped.

    Parameters
    ----------
    root : str
        Folder holding ``JPEGImages/``, ``Annotations/`` and ``ImageSets/Main/``.
    splits : sequence of str
        ImageSets names, e.g. ``('train',)`` for ``ImageSets/Main/train.txt``.
    classes : sequence of str
        Class names, lower case (GluonCV lower-cases the names it reads); ``class_id`` is the
        index in this list. Objects of other classes are ignored, as VOCDetection does
        (:func:`check_voc_folder` reports them).
    exclude : iterable of str
        Image ids to leave out.
    transform : callable, optional
        ``transform(image, label)`` applied to each item.
    """

    def __init__(self, root: str, splits: Sequence[str], classes: Sequence[str],
                 exclude: Iterable[str] = (), transform=None):
        classes = tuple(classes)
        bad = [c for c in classes if not isinstance(c, str) or not c or c != normalize_name(c)]
        if bad or not classes or len(set(classes)) != len(classes):
            raise ValueError(f'classes must be distinct, non-empty, stripped lower-case names '
                             f'(GluonCV lower-cases the names it reads), got {list(classes)}')
        self._classes = classes
        self._exclude = frozenset(exclude)
        super().__init__(root=root, splits=tuple(splits), transform=transform)

    def __str__(self) -> str:
        return f"{type(self).__name__}({self._root}, {'+'.join(self._splits)})"

    @property
    def classes(self) -> Tuple[str, ...]:
        """Category names; ``class_id`` in the labels indexes this tuple."""
        return self._classes

    def _load_items(self, splits: Sequence[str]) -> List[Tuple[str, str]]:
        return [(self._root, image_id) for split in splits
                for image_id in read_split(self._root, split) if image_id not in self._exclude]

    def _load_label(self, idx: int) -> np.ndarray:
        label = super()._load_label(idx).reshape(-1, 6)
        width, height = self._im_shapes[idx]
        return clip_boxes(label, width, height)

    def _validate_label(self, xmin, ymin, xmax, ymax, width, height):
        # VOCDetection logs a warning and drops the box when this raises AssertionError
        problem = box_problem((xmin, ymin, xmax, ymax), width, height)
        if problem:
            raise AssertionError(problem)


def read_class_names(root: str, splits: Sequence[str],
                     exclude: Iterable[str] = ()) -> Tuple[str, ...]:
    """Sorted class names (normalised as GluonCV matches them) of the objects in `splits`.

    Annotations that are missing or do not parse are skipped: :func:`check_voc_folder`
    reports them.
    """
    names = set()
    skip = frozenset(exclude)
    for split in splits:
        for image_id in read_split(root, split):
            if image_id in skip:
                continue
            try:
                objects = ET.parse(annotation_path(root, image_id)).getroot().iter('object')
                names.update(normalize_name(obj.find('name').text) for obj in objects)
            except (ET.ParseError, OSError, AttributeError):
                continue
    return tuple(sorted(names))


def _bad_image_ids(root: str, problems: Sequence[Problem], skip_bad: bool) -> List[str]:
    """Ids of the images to leave out, with a warning each; raises BadDatasetError on errors
    unless `skip_bad` (and always for errors not tied to an image: a missing split file)."""
    errors = [p for p in problems if p.severity == ERROR]
    if errors and (not skip_bad or any(p.image_id is None for p in errors)):
        raise BadDatasetError(root, errors)
    by_image = defaultdict(list)
    for p in errors:
        by_image[p.image_id].append(str(p))
    for image_id, messages in by_image.items():
        logger.warning('skipping image %s: %s', image_id, '; '.join(messages))
    warnings = [p for p in problems if p.severity != ERROR]
    if warnings:
        logger.info('%d warning(s) in %s, the first: %s', len(warnings), root, warnings[0])
    return list(by_image)


def _split_names(splits: Union[str, Sequence[str], None], default: str) -> Tuple[str, ...]:
    """Split names as a tuple: None gives ``(default,)``, a string gives ``(splits,)``."""
    if splits is None:
        return (default,)
    return (splits,) if isinstance(splits, str) else tuple(splits)


def get_dataset(name: str, root: Optional[str] = None, classes: Optional[Sequence[str]] = None,
                skip_bad: bool = False, train_splits: Optional[Sequence] = None,
                val_splits: Optional[Sequence] = None) -> Tuple[VOCDetection, VOCDetection]:
    """The training and validation data sets of `name`.

    Parameters
    ----------
    name : str
        ``'digits'``: the generated digits set at `root` (as returned by
        :func:`~gluon_ssdcl.data.digitset.ensure_digits`, called with its defaults when `root`
        is None, or its ``VOC2007/``), classes ``'0'..'9'``, splits ``train`` / ``val``.
        ``'voc'``: GluonCV's VOCDetection at `root` (default ``~/.mxnet/datasets/voc``,
        holding ``VOC2007/`` and ``VOC2012/``), splits ``[(2007, 'trainval'),
        (2012, 'trainval')]`` / ``[(2007, 'test')]`` as in GluonCV's train_ssd.py; not checked.
        ``'custom'``: the VOC-layout folder `root` (``JPEGImages/``, ``Annotations/``,
        ``ImageSets/Main/``) or its parent holding ``VOC2007/`` (see
        :func:`~gluon_ssdcl.data.voc_check.resolve_voc_root`), splits ``train`` / ``val`` (or e.g.
        ``trainval`` / ``test``).
    root : str, optional
        See `name`; required for ``'custom'``.
    classes : sequence of str, optional
        ``'custom'`` only: the class names, lower case; default: the sorted names found in the
        annotations of both splits.
    skip_bad : bool
        ``'digits'`` and ``'custom'`` are checked with :func:`check_voc_folder` first. On
        errors, False raises :class:`BadDatasetError` listing them all; True leaves those
        images out with a warning each.
    train_splits, val_splits : sequence, optional
        Other splits than the defaults above.

    Returns
    -------
    (train_dataset, val_dataset)
        Items ``(image (H, W, 3) uint8 NDArray, label (M, 6))``, see the module docstring.

    Raises
    ------
    ValueError
        For bad arguments, or a `root` that is not a VOC-layout folder nor its parent.
    BadDatasetError
        For errors in the data set (see `skip_bad`).
    """
    if name not in ('digits', 'voc', 'custom'):
        raise ValueError(f"unknown data set {name!r}; expected 'digits', 'voc' or 'custom'")
    if classes is not None and name != 'custom':
        raise ValueError(f"classes can only be given for 'custom', not for {name!r}")
    if name == 'voc':
        root = root or VOC_ROOT
        return (VOCDetection(root, splits=train_splits or ((2007, 'trainval'), (2012, 'trainval'))),
                VOCDetection(root, splits=val_splits or ((2007, 'test'),)))
    if name == 'digits':
        root = root or digits.ensure_digits()
        classes = digits.CLASSES
    elif root is None:
        raise ValueError("root is required for the 'custom' data set")
    root = resolve_voc_root(root)
    train_splits, val_splits = _split_names(train_splits, 'train'), _split_names(val_splits, 'val')
    problems = check_voc_folder(root, train_splits + val_splits, classes)
    bad = _bad_image_ids(root, problems, skip_bad)
    if classes is None:
        classes = read_class_names(root, train_splits + val_splits, bad)
        if not classes:
            raise ValueError(f'no objects annotated in {root}: pass the class names')
    datasets = tuple(VOCLayoutDetection(root, splits, classes, bad)
                     for splits in (train_splits, val_splits))
    for dataset in datasets:
        if not len(dataset):
            raise BadDatasetError(root, [Problem(root, f'no usable images in {dataset}')])
    return datasets


class SSDTrainTransform(SSDDefaultTrainTransform):
    """GluonCV's SSD training transform with optional flips and switchable augmentation.

    GluonCV's steps in GluonCV's order: random colour distortion, random expansion (p=0.5),
    random crop with IoU constraints, resize with a random interpolation, random horizontal
    flip, normalisation, GluonCV's SSDTargetGenerator. The expansion and crop are
    :func:`~gluon_ssdcl.data.augment.expand_and_crop`: GluonCV's draws, boxes and pixels at a
    fraction of the cost. An image without objects gets all-background targets (GluonCV's
    matcher fails on zero boxes).

    Parameters
    ----------
    width, height : int
        Network input size.
    anchors : mxnet.nd.NDArray, optional
        ``(1, N, 4)`` center-format anchors on the CPU; without them the transform returns
        ``(image, label)`` instead of targets.
    flip : bool
        Random horizontal flips; off by default, as flipping changes what a digit means.
    augment : bool
        False: only resize (bilinear) and normalise, deterministically.
    normalize : bool
        False: return the resized ``(height, width, 3)`` uint8 image instead of the normalised
        float one (see :mod:`gluon_ssdcl.data.cache`).
    batch_targets : bool
        With anchors: return ``(image, label)`` per image and make the targets a batch at a
        time in :meth:`batchify` (the loader's ``batchify_fn``): one call of the target
        generator per batch instead of one per image, the same targets.
    **kwargs
        ``mean``, ``std``, ``iou_thresh``, ``box_norm`` as in SSDDefaultTrainTransform.
    """

    def __init__(self, width: int, height: int, anchors: Optional[mx.nd.NDArray] = None,
                 flip: bool = False, augment: bool = True, normalize: bool = True,
                 batch_targets: bool = False, **kwargs):
        super().__init__(width, height, anchors, **kwargs)
        self._flip = flip
        self._augment = augment
        self._normalize = normalize
        self._batch_targets = batch_targets

    def _distort_expand_crop(self, img: mx.nd.NDArray, bbox: np.ndarray):
        """GluonCV's colour distortion, random expansion and constrained random crop."""
        img = experimental.image.random_color_distort(img)
        return expand_and_crop(img, bbox, fill=[m * 255 for m in self._mean])

    @property
    def num_anchors(self) -> int:
        """N, the number of anchors targets are made for (0 without anchors)."""
        return 0 if self._anchors is None else self._anchors.shape[1]

    def to_tensor(self, img: mx.nd.NDArray) -> mx.nd.NDArray:
        """``(H, W, 3)`` or ``(B, H, W, 3)`` uint8 to normalised float32 ``(3, H, W)`` or
        ``(B, 3, H, W)``."""
        return mx.nd.image.normalize(mx.nd.image.to_tensor(img), mean=self._mean, std=self._std)

    def normalize_batch(self, images: np.ndarray) -> mx.nd.NDArray:
        """``(B, 3, H, W)`` uint8 NumPy images to the normalised float32 ``(B, 3, H, W)`` input:
        :meth:`to_tensor`'s values exactly (the same float32 steps), in NumPy, about three times
        faster than MXNet's image operators on a CPU."""
        shape = (1, 3, 1, 1)
        x = images.astype(np.float32)
        x /= np.float32(255)
        x -= np.asarray(self._mean, np.float32).reshape(shape)
        x /= np.asarray(self._std, np.float32).reshape(shape)
        return mx.nd.array(x)

    def __call__(self, src: mx.nd.NDArray, label: np.ndarray):
        """Transform one item.

        Parameters
        ----------
        src : mxnet.nd.NDArray
            ``(H, W, 3)`` uint8 image.
        label : numpy.ndarray
            ``(M, 5+)`` ``[xmin, ymin, xmax, ymax, class_id, ...]``; M may be 0.

        Returns
        -------
        tuple
            ``(image (3, height, width), cls_targets (N,), box_targets (N, 4))`` with anchors,
            else ``(image, label (M', 5+))``; the image is ``(height, width, 3)`` uint8 when
            not normalising.
        """
        img, bbox = self._distort_expand_crop(src, label) if self._augment else (src, label)
        h, w, _ = img.shape
        interp = np.random.randint(0, 5) if self._augment else 1
        img = timage.imresize(img, self._width, self._height, interp=interp)
        bbox = tbbox.resize(bbox, (w, h), (self._width, self._height))
        if self._augment and self._flip:
            img, flips = timage.random_flip(img, px=0.5)
            bbox = tbbox.flip(bbox, (self._width, self._height), flip_x=flips[0])
        if self._normalize:
            img = self.to_tensor(img)
        if self._anchors is None or self._batch_targets:
            return img, bbox.astype(np.float32)
        if not len(bbox):
            num_anchors = self._anchors.shape[1]
            return img, mx.nd.zeros((num_anchors,)), mx.nd.zeros((num_anchors, 4))
        cls_targets, box_targets, _ = self._target_generator(
            self._anchors, None, mx.nd.array(bbox[None, :, :4]), mx.nd.array(bbox[None, :, 4:5]))
        return img, cls_targets[0], box_targets[0]

    def stack(self, items: Sequence[Tuple[mx.nd.NDArray, np.ndarray]]):
        """Stack the images of ``(image, label (M, 5+))`` items and pad their labels with rows of
        -1 (which match no anchor): ``(images (B, ...), labels (B, M', 5))``."""
        images, labels = zip(*items)
        labels = Pad(pad_val=-1)([label[:, :5] if len(label) else np.full((1, 5), -1, np.float32)
                                  for label in labels])
        return Stack()(images), labels

    def targets(self, labels: mx.nd.NDArray):
        """The targets of a batch of padded labels (:meth:`stack`), on the labels' context:
        ``cls_targets (B, N), box_targets (B, N, 4)``, equal to :meth:`__call__`'s image by
        image. On a CPU :func:`~gluon_ssdcl.data.targets.ssd_targets` computes them (GluonCV's
        targets in NumPy, about 8 times faster); elsewhere one call of GluonCV's
        SSDTargetGenerator on the device."""
        if labels.context.device_type != 'gpu':  # 'cpu' or 'cpu_shared'
            return tuple(mx.nd.array(t, ctx=labels.context) for t in ssd_targets(
                self._anchors, labels.asnumpy(), self._iou_thresh, self._box_norm))
        cls_targets, box_targets, _ = self._target_generator(
            self._anchors.as_in_context(labels.context), None,
            labels.slice_axis(axis=-1, begin=0, end=4), labels.slice_axis(axis=-1, begin=4, end=5))
        # an image of padding alone gets infinite offsets from the encoder: 0, as image by image
        positive = mx.nd.broadcast_like((cls_targets > 0).expand_dims(-1), box_targets)
        return cls_targets, mx.nd.where(positive, box_targets, mx.nd.zeros_like(box_targets))

    def batchify(self, items: Sequence[Tuple[mx.nd.NDArray, np.ndarray]]):
        """:meth:`stack` then :meth:`targets`: ``(images (B, ...), cls_targets (B, N),
        box_targets (B, N, 4))``."""
        images, labels = self.stack(items)
        return (images, *self.targets(labels))


class DeviceTargets:
    """A loader of ``(images, padded labels)`` batches (:meth:`SSDTrainTransform.stack`) whose
    targets are made in this process, a batch at a time on ``ctx`` (GluonCV's
    SSDTargetGenerator, as GluonCV's DALI path makes them on the GPU): its workers only decode
    and augment. Yields ``(images (B, 3, H, W), cls_targets (B, N), box_targets (B, N, 4))``,
    the targets on ``ctx``.
    """

    def __init__(self, loader, transform: 'SSDTrainTransform', ctx: mx.Context):
        self.loader, self.transform, self.ctx = loader, transform, ctx

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield (images, *self.transform.targets(labels.as_in_context(self.ctx)))


def get_train_transform(width: int, height: int, anchors, flip: bool = False,
                        augment: bool = True, normalize: bool = True,
                        batch_targets: bool = False) -> SSDTrainTransform:
    """The SSD training transform that makes targets for `anchors`.

    Parameters
    ----------
    width, height : int
        Network input size.
    anchors : mxnet.nd.NDArray or numpy.ndarray
        ``(1, N, 4)`` center-format anchors, e.g. the third output of the network in training
        mode on a ``(1, 3, height, width)`` input; copied to the CPU.
    flip, augment, normalize, batch_targets : bool
        See :class:`SSDTrainTransform`.

    Returns
    -------
    SSDTrainTransform
        ``(image, label) -> (image (3, H, W), cls_targets (N,), box_targets (N, 4))``;
        cls_targets 0 for background and k + 1 for class k; box_targets encoded with
        stds (0.1, 0.1, 0.2, 0.2), 0 for non-positive anchors.
    """
    if isinstance(anchors, mx.nd.NDArray):
        anchors = anchors.as_in_context(mx.cpu())
    else:
        anchors = mx.nd.array(anchors)
    if anchors.ndim != 3 or anchors.shape[0] != 1 or anchors.shape[2] != 4:
        raise ValueError(f'anchors must have shape (1, N, 4), got {anchors.shape}')
    return SSDTrainTransform(width, height, anchors, flip=flip, augment=augment,
                             normalize=normalize, batch_targets=batch_targets)


def get_val_transform(width: int, height: int) -> SSDDefaultValTransform:
    """GluonCV's SSD validation transform:
    ``(image, label) -> (image (3, height, width), label (M, 6))``, boxes resized with the image."""
    return SSDDefaultValTransform(width, height)


def _batchify_val(items: Sequence[Tuple[mx.nd.NDArray, np.ndarray]]):
    """GluonCV's ``Tuple(Stack(), Pad(pad_val=-1))``, with at least one label row per image:
    MXNet cannot slice a ``(B, 0, 6)`` array, as a batch of images without objects would give."""
    images, labels = zip(*items)
    labels = [label if len(label) else np.full((1, label.shape[1]), -1, label.dtype)
              for label in labels]
    return Stack()(images), Pad(pad_val=-1)(labels)


def get_dataloader(train_dataset, val_dataset, width: int, height: int, anchors, batch_size: int,
                   num_workers: int = 0, flip: bool = False, augment: bool = True,
                   max_cache_bytes: int = 4 * 2**30, shard: Tuple[int, int] = (0, 1),
                   targets_ctx: Optional[mx.Context] = None
                   ) -> Tuple[mx.gluon.data.DataLoader, mx.gluon.data.DataLoader]:
    """Training and validation loaders as in GluonCV's train_ssd.py, targets made in the workers
    (or, with ``targets_ctx``, in this process on that device).

    Without augmentation the training images and targets do not change between epochs: they are
    computed once and held in memory (:mod:`gluon_ssdcl.data.cache`) when that takes at most
    ``max_cache_bytes``.

    Parameters
    ----------
    train_dataset, val_dataset : Dataset
        Items ``(image, label (M, 6))``, e.g. from :func:`get_dataset`.
    width, height : int
        Network input size.
    anchors : mxnet.nd.NDArray
        ``(1, N, 4)`` anchors of the network at this input size.
    batch_size : int
        Images per batch, B (per worker); lowered, with a logged note, so that the training
        images fill one batch of every worker.
    num_workers : int
        Worker processes; 0 loads in the main process.
    flip, augment : bool
        Training augmentation, see :class:`SSDTrainTransform` (no flips by default).
    max_cache_bytes : int
        Memory the in-memory training targets may take (0: never hold them).
    shard : (int, int)
        ``(rank, workers)`` of a distributed job's worker: its training loader yields its part
        of each global batch of ``workers * batch_size``
        (:class:`~gluon_ssdcl.data.sampler.ShardSampler`); (0, 1) in one process.
    targets_ctx : mx.Context, optional
        Make the training targets in this process on this device (:class:`DeviceTargets`,
        e.g. the training GPU), the workers only decoding and augmenting, unless they are
        held in memory; by default the workers make them.

    Returns
    -------
    train_loader
        Shuffled, the last incomplete batch left out (each epoch is its own: an epoch's order
        depends only on NumPy's generator, so a resumed run repeats the uninterrupted one); yields
        ``(image (B, 3, H, W), cls_targets (B, N), box_targets (B, N, 4))``.
    val_loader
        In order, ``last_batch='keep'``; yields ``(image (B, 3, H, W), label (B, M, 6))``,
        labels padded with rows of -1 (M >= 1).
    """
    workers = shard[1]
    if batch_size * workers > len(train_dataset):
        lowered = max(1, len(train_dataset) // workers)
        logger.warning("batch size %d%s is larger than the %d training images: using %d",
                       batch_size, f' x {workers} workers' if workers > 1 else '',
                       len(train_dataset), lowered)
        batch_size = lowered
    train_transform = get_train_transform(width, height, anchors, flip=flip, augment=augment,
                                          batch_targets=True)
    cache_size = cache_nbytes(len(train_dataset), width, height, train_transform.num_anchors)
    if not augment and cache_size <= max_cache_bytes:
        raw = get_train_transform(width, height, anchors, augment=False, normalize=False,
                                  batch_targets=True)
        train_loader = cached_loader(cache_targets(train_dataset, raw, num_workers), batch_size,
                                     train_transform.normalize_batch, shard)
    else:
        train_loader = mx.gluon.data.DataLoader(
            train_dataset.transform(train_transform),
            batch_sampler=ShardSampler(len(train_dataset), batch_size, *shard),
            batchify_fn=train_transform.batchify if targets_ctx is None else train_transform.stack,
            num_workers=num_workers)
        if targets_ctx is not None:
            train_loader = DeviceTargets(train_loader, train_transform, targets_ctx)
    return train_loader, get_val_loader(val_dataset, width, height, batch_size, num_workers)


def get_val_loader(val_dataset, width: int, height: int, batch_size: int, num_workers: int = 0
                   ) -> mx.gluon.data.DataLoader:
    """The validation loader of :func:`get_dataloader`, alone: in order, ``last_batch='keep'``;
    yields ``(image (B, 3, H, W), label (B, M, 6))``, labels padded with rows of -1 (M >= 1)."""
    return mx.gluon.data.DataLoader(
        val_dataset.transform(get_val_transform(width, height)), batch_size, shuffle=False,
        batchify_fn=_batchify_val, last_batch='keep', num_workers=num_workers)
