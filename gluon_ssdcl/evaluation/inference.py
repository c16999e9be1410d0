"""Running a trained SSDCenter over a data set: the VOC07 mAP of its detections, and the
embeddings of its positive anchors (the anchors matched to ground truth exactly as in training).

Label conventions: class ids are 0-based indices into ``classes``; anchor targets
(``cls_targets``) are 0 for background, -1 for ignored anchors and ``k + 1`` for class ``k``.
"""
from __future__ import annotations

import itertools
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric
from mxnet import autograd, gluon

from ..data.datasets import get_train_transform, get_val_loader
from ..embeddings.knn import sample_gallery
from ..utils.progress import progress

__all__ = ['NMS_THRESH', 'NMS_TOPK', 'POST_NMS', 'IOU_THRESH', 'net_anchors', 'positive_loader',
           'collect_positives', 'build_gallery', 'ImageDetections', 'collect_detections',
           'anchor_cache', 'cached_detections', 'validation_detections', 'detections_map',
           'detection_map']

NMS_THRESH = 0.45  # GluonCV's train_ssd.py validate()
NMS_TOPK = 400
POST_NMS = 100  # GluonCV's SSD default: detections kept per image
IOU_THRESH = 0.5


def _progress(loader, max_batches: Optional[int], desc: str):
    """The first ``max_batches`` batches of ``loader`` (all when None) with a progress bar
    (:func:`~gluon_ssdcl.utils.progress.progress`: on a terminal only, unless forced)."""
    total = len(loader) if hasattr(loader, '__len__') else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    return progress(itertools.islice(loader, max_batches), total=total, desc=desc, leave=False)


def _split(batch: mx.nd.NDArray, ctx: Sequence[mx.Context]) -> List[mx.nd.NDArray]:
    """``batch`` split along axis 0 over ``ctx`` (over fewer contexts when it is smaller)."""
    return gluon.utils.split_and_load(batch, ctx[:len(batch)], even_split=False)


def collect_positives(net, loader, ctx: Sequence[mx.Context], max_batches: Optional[int] = None,
                      max_rows: Optional[int] = None
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings, labels and softmax predictions of the positive anchors of every image.

    Parameters
    ----------
    net : SSDCenter
        Run with :meth:`~gluon_ssdcl.model.SSDCenter.anchor_outputs` in predict mode.
    loader : iterable
        Batches ``(img (B, 3, H, W), cls_targets (B, N), box_targets (B, N, 4))``, e.g. from
        :func:`positive_loader`; ``cls_targets`` 0 background, -1 ignored, ``k + 1`` class k.
    ctx : list of mx.Context
        Each batch is split over these.
    max_batches : int, optional
        Stop after this many batches (all by default).
    max_rows : int, optional
        Stop after the batch that brings the positives to at least this many.

    Returns
    -------
    embeddings : numpy.ndarray of float32, (M, D)
        One row per anchor with ``cls_target > 0``, in loader order.
    labels : numpy.ndarray of int64, (M,)
        ``cls_target - 1``.
    softmax_pred : numpy.ndarray of int64, (M,)
        Argmax of the class head over the object classes (background excluded).
    """
    embeddings, labels, predictions = [], [], []
    with autograd.predict_mode():
        for batch in _progress(loader, max_batches, 'positives'):
            data = _split(batch[0], ctx)
            outputs = [net.anchor_outputs(x) for x in data]
            targets = batch[1].asnumpy()
            positive = targets > 0
            scores = [o[0].slice_axis(axis=-1, begin=1, end=None).argmax(axis=-1) for o in outputs]
            embeddings.append(np.concatenate([o[3].asnumpy() for o in outputs])[positive])
            predictions.append(np.concatenate([s.asnumpy() for s in scores])[positive])
            labels.append(targets[positive] - 1)
            if max_rows is not None and sum(len(rows) for rows in labels) >= max_rows:
                break
    if not embeddings:
        return (np.zeros((0, net.embed_dim), np.float32), np.zeros(0, np.int64),
                np.zeros(0, np.int64))
    return (np.concatenate(embeddings).astype(np.float32),
            np.concatenate(labels).astype(np.int64),
            np.concatenate(predictions).astype(np.int64))


def net_anchors(net) -> mx.nd.NDArray:
    """The net's (1, N, 4) anchors at its ``base_size``, from one pass on a blank image."""
    ctx = next(iter(net.collect_params().values())).list_ctx()[0]
    blank = mx.nd.zeros((1, 3, net.base_size, net.base_size), ctx=ctx)
    with autograd.predict_mode():
        return net.anchor_outputs(blank)[2]


def positive_loader(dataset, net, batch_size: int, num_workers: int = 0,
                    anchors: Optional[mx.nd.NDArray] = None,
                    order: Optional[Sequence[int]] = None) -> gluon.data.DataLoader:
    """A loader of training targets without augmentation, to find a data set's positive anchors.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image (H, W, 3) uint8, label (M, 6))``.
    net : SSDCenter
        Gives the input size (``base_size``) and, unless ``anchors`` is given, the anchors.
    batch_size : int
    num_workers : int
        Worker processes; 0 loads in the main process.
    anchors : mx.nd.NDArray, optional
        ``(1, N, 4)`` anchors of ``net``, when already at hand.
    order : sequence of int, optional
        The images to load, in this order (default: all, in the data set's order).

    Returns
    -------
    DataLoader
        In ``order``, last batch kept; yields ``(img (B, 3, S, S), cls_targets (B, N),
        box_targets (B, N, 4))`` with ``S = net.base_size``.
    """
    anchors = net_anchors(net) if anchors is None else anchors
    size = net.base_size
    transform = get_train_transform(size, size, anchors, augment=False, batch_targets=True)
    order = range(len(dataset)) if order is None else order
    return gluon.data.DataLoader(dataset.transform(transform), batch_size, sampler=order,
                                 batchify_fn=transform.batchify, last_batch='keep',
                                 num_workers=num_workers)


class ImageDetections(NamedTuple):
    """One image's kept detections and ground truth, as :func:`collect_detections` returns them
    (NumPy, input pixels; K detections, M ground-truth objects).

    Attributes
    ----------
    ids : numpy.ndarray of float32, (K,)
        Class ids of the class head (0-based).
    scores : numpy.ndarray of float32, (K,)
        Their softmax probabilities.
    bboxes : numpy.ndarray of float32, (K, 4)
        ``[xmin, ymin, xmax, ymax]``, clipped to the input.
    embeddings : numpy.ndarray of float32, (K, D) or None
        The detections' embeddings, when collected.
    gt_bboxes : numpy.ndarray of float32, (M, 4)
    gt_ids : numpy.ndarray of float32, (M,)
    gt_difficult : numpy.ndarray of float32, (M,) or None
    """
    ids: np.ndarray
    scores: np.ndarray
    bboxes: np.ndarray
    embeddings: Optional[np.ndarray]
    gt_bboxes: np.ndarray
    gt_ids: np.ndarray
    gt_difficult: Optional[np.ndarray]


def _image_detections(ids, scores, bboxes, embedded, labels) -> List[ImageDetections]:
    """One :class:`ImageDetections` per image of a batch's NumPy outputs (ids, scores (B, K),
    boxes (B, K, 4), embeddings (B, K, D) or None) and labels (B, M, 6), padding removed."""
    images = []
    for i in range(len(ids)):
        kept, real = ids[i] >= 0, labels[i, :, 4] >= 0
        gt = labels[i][real]
        images.append(ImageDetections(
            ids[i][kept], scores[i][kept], bboxes[i][kept],
            embedded[i][kept] if embedded is not None else None, gt[:, :4], gt[:, 4],
            gt[:, 5] if gt.shape[1] > 5 else None))
    return images


def _net_detections(net, x: mx.nd.NDArray, embeddings: bool):
    """The net's outputs on ``x`` as NumPy: ids (B, K), scores (B, K), clipped boxes (B, K, 4)
    and, with ``embeddings``, (B, K, D) embeddings (else None)."""
    outputs = net(x)
    ids, scores, bboxes = outputs[:3]
    return (ids.asnumpy()[..., 0], scores.asnumpy()[..., 0],
            bboxes.clip(0, x.shape[2]).asnumpy(), outputs[3].asnumpy() if embeddings else None)


def collect_detections(net, val_loader, ctx: Sequence[mx.Context], embeddings: bool = False,
                       max_batches: Optional[int] = None) -> List[ImageDetections]:
    """Run the detector over a validation loader and keep every image's detections (padding
    removed) with its ground truth, so that they can be relabelled and scored offline.

    Sets the net's NMS to GluonCV's validation values (0.45, top 400), which it keeps; runs in
    predict mode. The net's inference-embeddings setting is restored afterwards.

    Parameters
    ----------
    net : SSDCenter
    val_loader : iterable
        Batches ``(img (B, 3, H, W), label (B, M, 6))`` as for :func:`detection_map`.
    ctx : list of mx.Context
    embeddings : bool
        Also keep each detection's embedding.
    max_batches : int, optional
        Stop after this many batches (all by default).

    Returns
    -------
    list of ImageDetections
        One per image, in loader order.
    """
    net.set_nms(nms_thresh=NMS_THRESH, nms_topk=NMS_TOPK)
    infer_embeddings = net.infer_embeddings
    if embeddings and not infer_embeddings:
        net.set_embeddings(infer=True)
    images = []
    try:
        with autograd.predict_mode():
            for batch in _progress(val_loader, max_batches, 'detections'):
                for x, y in zip(_split(batch[0], ctx), _split(batch[1], ctx)):
                    images += _image_detections(*_net_detections(net, x, embeddings),
                                                y.asnumpy())
    finally:
        if net.infer_embeddings != infer_embeddings:
            net.set_embeddings(infer=infer_embeddings)
    return images


def anchor_cache(net, val_dataset, ctx: Sequence[mx.Context], batch_size: int,
                 max_images: Optional[int] = None) -> list:
    """The validation images' per-anchor embeddings and box predictions, kept so that other
    class heads can be evaluated without the backbone (:func:`cached_detections`).

    Parameters
    ----------
    net : SSDCenter
    val_dataset : Dataset
        Items ``(image (H, W, 3) uint8, label (M, 6))``.
    ctx : list of mx.Context
    batch_size : int
    max_images : int, optional

    Returns
    -------
    list
        Per batch and device: ``(embeddings (B,N,D), box_preds (B,N,4), anchors (1,N,4),
        labels (B,M,6) NumPy, input size)``.
    """
    if max_images:
        val_dataset = val_dataset.take(max_images)
    size = net.base_size
    cache = []
    with autograd.predict_mode():
        for batch in _progress(get_val_loader(val_dataset, size, size, batch_size), None,
                               'anchors'):
            for x, y in zip(_split(batch[0], ctx), _split(batch[1], ctx)):
                _, box_preds, anchors, embeddings = net.anchor_outputs(x)
                cache.append((embeddings, box_preds, anchors, y.asnumpy(), x.shape[2]))
    return cache


def cached_detections(net, cache: list) -> List[ImageDetections]:
    """Every image's detections (without embeddings) by the net's current class head over an
    :func:`anchor_cache`, as :func:`collect_detections` finds them (its NMS settings)."""
    net.set_nms(nms_thresh=NMS_THRESH, nms_topk=NMS_TOPK)
    images = []
    for embeddings, box_preds, anchors, labels, size in cache:
        ids, scores, bboxes = net.detect_anchors(embeddings, box_preds, anchors)
        images += _image_detections(ids.asnumpy()[..., 0], scores.asnumpy()[..., 0],
                                    bboxes.clip(0, size).asnumpy(), None, labels)
    return images


def validation_detections(net, val_dataset, ctx: Sequence[mx.Context], batch_size: int,
                          num_workers: int = 0, max_images: Optional[int] = None
                          ) -> List[ImageDetections]:
    """Every validation image's detections with their embeddings (:func:`collect_detections`
    over the validation loader of ``val_dataset`` at the net's ``base_size``).

    Parameters
    ----------
    net : SSDCenter
    val_dataset : Dataset
        Items ``(image (H, W, 3) uint8, label (M, 6))``.
    ctx : list of mx.Context
    batch_size, num_workers : int
        Loader settings.
    max_images : int, optional
        Only the first this many images (all by default).

    Returns
    -------
    list of ImageDetections
        One per image, in order, each with its (K, D) embeddings.
    """
    if max_images:
        val_dataset = val_dataset.take(max_images)
    size = net.base_size
    loader = get_val_loader(val_dataset, size, size, batch_size, num_workers)
    return collect_detections(net, loader, ctx, embeddings=True)


def detections_map(images: Sequence[ImageDetections], classes: Sequence[str],
                   relabel: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                   iou_thresh: float = IOU_THRESH) -> Tuple[float, Dict[str, float]]:
    """VOC07 (11-point) mAP at IoU ``iou_thresh`` (0.5) of collected detections
    (:func:`collect_detections`).

    Parameters
    ----------
    images : sequence of ImageDetections
    classes : sequence of str
        Class names; ids index them (a relabelled id outside them, such as the open-set
        "unknown" id -2, counts as no detection).
    relabel : callable, optional
        ``relabel(embeddings (K, D)) -> class ids (K,)``, applied to each image's detections
        (they need embeddings); scores unchanged.

    Returns
    -------
    mean_ap : float
        Mean over the classes with an AP.
    per_class : dict
        ``{class name: AP}``; NaN for a class without ground truth.
    """
    metric = VOC07MApMetric(iou_thresh=iou_thresh, class_names=list(classes))
    for image in images:
        ids = image.ids
        if relabel is not None and len(ids):
            ids = np.asarray(relabel(image.embeddings), dtype=np.float32)
        ids = np.where((ids >= 0) & (ids < len(classes)), ids, -1)
        difficult = None if image.gt_difficult is None else image.gt_difficult[None, :, None]
        metric.update(image.bboxes[None], ids[None, :, None], image.scores[None, :, None],
                      image.gt_bboxes[None], image.gt_ids[None, :, None], difficult)
    names, values = metric.get()
    return float(values[-1]), {name: float(value) for name, value in zip(names[:-1], values[:-1])}


def detection_map(net, val_loader, ctx: Sequence[mx.Context], classes: Sequence[str],
                  relabel: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                  max_batches: Optional[int] = None) -> Tuple[float, Dict[str, float]]:
    """VOC07 (11-point) mAP at IoU 0.5, as GluonCV's train_ssd.py ``validate()`` computes it.

    Sets the net's NMS to GluonCV's validation values (0.45, top 400), which it keeps; runs in
    predict mode and clips boxes to the input size. Hybridize the net first for speed.
    :func:`collect_detections` then :func:`detections_map`.

    Parameters
    ----------
    net : SSDCenter
    val_loader : iterable
        Batches ``(img (B, 3, H, W), label (B, M, 6))``, label rows ``[xmin, ymin, xmax, ymax,
        class_id, difficult]`` in input pixels, padded with -1 (see
        :func:`gluon_ssdcl.data.datasets.get_dataloader`); a 5-column label has no difficult flag.
    ctx : list of mx.Context
    classes : sequence of str
        Class names; ``class_id`` indexes them.
    relabel : callable, optional
        ``relabel(embeddings (K, D) numpy) -> class ids (K,)``: the net then also returns
        embeddings and each kept detection gets this class instead of the class head's
        (scores unchanged). The net's inference-embeddings setting is restored afterwards.
    max_batches : int, optional
        Stop after this many batches (all by default).

    Returns
    -------
    mean_ap : float
        Mean over the classes with an AP.
    per_class : dict
        ``{class name: AP}``; NaN for a class without ground truth.
    """
    images = collect_detections(net, val_loader, ctx, embeddings=relabel is not None,
                                max_batches=max_batches)
    return detections_map(images, classes, relabel)


def build_gallery(net, dataset, ctx: Sequence[mx.Context], batch_size: int, max_size: int,
                  seed: int = 0, num_workers: int = 0, anchors: Optional[mx.nd.NDArray] = None,
                  max_batches: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The k-NN gallery: embeddings and labels of the positive anchors of ``dataset``'s images,
    taken in a random order (from ``seed``) until there are ``max_size`` of them.

    Parameters
    ----------
    net : SSDCenter
    dataset : Dataset
        Items ``(image (H, W, 3) uint8, label (M, 6))``, typically training images.
    ctx : list of mx.Context
    batch_size, num_workers : int
        Loader settings (:func:`positive_loader`).
    max_size : int
        Cap on the rows: the images are read in a random order until their positives reach
        it, and the rows are then sampled down to it
        (:func:`~gluon_ssdcl.embeddings.knn.sample_gallery`), reproducibly from ``seed``.
    anchors : mx.nd.NDArray, optional
        ``(1, N, 4)`` anchors of ``net``, when already at hand.
    max_batches : int, optional
        Use only the first batches.

    Returns
    -------
    embeddings : numpy.ndarray of float32, (G, D)
    labels : numpy.ndarray of int64, (G,)

    Raises
    ------
    ValueError
        When ``dataset`` has no positive anchors.
    """
    order = np.random.default_rng(seed).permutation(len(dataset)).tolist()
    loader = positive_loader(dataset, net, batch_size, num_workers, anchors, order)
    embeddings, labels, _ = collect_positives(net, loader, ctx, max_batches, max_size)
    if not len(embeddings):
        raise ValueError("the gallery images have no positive anchors: no k-NN gallery")
    return sample_gallery(embeddings, labels, max_size, seed)
