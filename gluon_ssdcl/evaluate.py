"""Evaluation: VOC07 mAP, embeddings of matched anchors, KNN / nearest-center classifiers.

The comparison of DESIGN.md: on the validation set's positive anchors (anchors matched to a
ground-truth box exactly as in training), the class accuracy of the softmax head, of a KNN
classifier over the training set's positive embeddings, and of the nearest learned center;
plus the VOC07 mAP of the detector as trained and with every detection relabelled by KNN.

Run ``python -m gluon_ssdcl.evaluate --params ssd_center_best.params`` to print the table and
write ``ssd_center_best_eval.json`` beside the checkpoint.

Label conventions: class ids are 0-based indices into ``classes``; anchor targets
(``cls_targets``) are 0 for background, -1 for ignored anchors and ``k + 1`` for class ``k``.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import math
import os
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric
from mxnet import autograd, gluon
from tqdm import tqdm

from .checkpoint import load_checkpoint, restore
from .data.datasets import get_dataset, get_train_transform, get_val_loader
from .loss import Mode
from .model_zoo import get_model

__all__ = ['knn_predict', 'nearest_center_predict', 'sample_gallery', 'collect_positives',
           'positive_loader', 'detection_map', 'compare_classifiers', 'format_table',
           'save_results', 'main']

logger = logging.getLogger(__name__)

NMS_THRESH = 0.45  # GluonCV's train_ssd.py validate()
NMS_TOPK = 400
IOU_THRESH = 0.5
MISSING = '–'  # table cell of a value that does not exist (e.g. KNN in softmax mode)

# (row title, result key) of the comparison table
TABLE_ROWS = (('mAP', 'map'), ('softmax acc', 'softmax_acc'), ('KNN acc', 'knn_acc'),
              ('nearest-center acc', 'center_acc'), ('mAP relabelled by KNN', 'knn_map'))


def _numpy(array) -> np.ndarray:
    """A NumPy view of an NDArray (copied to the host) or of any array-like."""
    return array.asnumpy() if isinstance(array, mx.nd.NDArray) else np.asarray(array)


def _keep_smallest(scores: np.ndarray, indices: np.ndarray,
                   k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The k smallest scores of each row, and their indices (both (M, k), in no order)."""
    if scores.shape[1] <= k:
        return scores, indices
    keep = np.argpartition(scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, keep, axis=1), np.take_along_axis(indices, keep, axis=1)


def _ranking_scores(queries: np.ndarray, gallery: np.ndarray,
                    gallery_sq: np.ndarray) -> np.ndarray:
    """(M, G) ``||g||^2 - 2 q.g``: the squared distances less ``||q||^2``, which is the same
    along a row, so rows rank the gallery by distance. ``gallery_sq``: (G,) ``||g||^2``."""
    scores = queries @ gallery.T
    scores *= -2.0
    scores += gallery_sq
    return scores


def _k_nearest(gallery: np.ndarray, gallery_sq: np.ndarray, queries: np.ndarray, k: int,
               chunk: int) -> Tuple[np.ndarray, np.ndarray]:
    """Squared distances and indices (both (M, k), in no particular order) of the k nearest
    gallery rows of each query, scanning the gallery ``chunk`` rows at a time.

    ``gallery_sq`` is the (G,) squared norms of the gallery rows.
    """
    best_scores = np.empty((len(queries), 0))
    best_indices = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(gallery), chunk):
        stop = min(start + chunk, len(gallery))
        scores = _ranking_scores(queries, gallery[start:stop], gallery_sq[start:stop])
        indices = np.broadcast_to(np.arange(start, stop), scores.shape)
        scores, indices = _keep_smallest(scores, indices, k)
        best_scores, best_indices = _keep_smallest(
            np.concatenate([best_scores, scores], axis=1),
            np.concatenate([best_indices, indices], axis=1), k)
    queries_sq = np.einsum('ij,ij->i', queries, queries)[:, None]
    return np.maximum(best_scores + queries_sq, 0.0), best_indices


def _check_points(gallery: np.ndarray, queries: np.ndarray, name: str) -> None:
    """ValueError unless ``gallery`` is (G, D) with G >= 1 and ``queries`` is (M, D)."""
    if gallery.ndim != 2 or not len(gallery):
        raise ValueError(f"{name} must have shape ({name[0].upper()}, D) with at least one row, "
                         f"got {gallery.shape}")
    if queries.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries must have shape (M, {gallery.shape[1]}) like the {name}, "
                         f"got {queries.shape}")


def _vote(codes: np.ndarray, distances: np.ndarray, num_classes: int) -> np.ndarray:
    """Majority vote of (M, k) neighbour class codes in [0, num_classes); among the classes
    tied for the most votes, the smallest summed distance wins, then the smallest code."""
    num_queries = len(codes)
    flat = (np.arange(num_queries)[:, None] * num_classes + codes).ravel()
    size = num_queries * num_classes
    votes = np.bincount(flat, minlength=size).reshape(num_queries, num_classes)
    summed = np.bincount(flat, weights=distances.ravel(),
                         minlength=size).reshape(num_queries, num_classes)
    summed[votes < votes.max(axis=1, keepdims=True)] = np.inf
    return summed.argmin(axis=1)


def knn_predict(gallery, gallery_labels, queries, k: int = 5, chunk: int = 2048) -> np.ndarray:
    """Classify queries by a majority vote of their k nearest gallery rows (Euclidean).

    Distances are computed in float64 blocks of at most ``chunk`` queries by ``chunk`` gallery
    rows, as ``||q||^2 - 2 q.g + ||g||^2``, so memory stays O(chunk^2) whatever the sizes.

    Ties: when several classes have the most votes among the k neighbours, the class whose
    tied neighbours have the smallest summed (Euclidean) distance to the query wins; if that
    is also equal, the smallest label. Neighbours exactly as far as the k-th one may be
    chosen in any order.

    Parameters
    ----------
    gallery : array-like or NDArray, (G, D)
        Labelled embeddings.
    gallery_labels : array-like or NDArray of int, (G,)
        Their class ids (any integers).
    queries : array-like or NDArray, (M, D)
        Embeddings to classify.
    k : int
        Number of neighbours, 1 <= k <= G.
    chunk : int
        Block size of the distance computation (rows of queries and of the gallery).

    Returns
    -------
    numpy.ndarray of int64, (M,)
        The predicted class of each query, one of ``gallery_labels``.
    """
    gallery = _numpy(gallery).astype(np.float64)
    gallery_labels = _numpy(gallery_labels)
    queries = _numpy(queries).astype(np.float64)
    _check_points(gallery, queries, 'gallery')
    if gallery_labels.shape != gallery.shape[:1]:
        raise ValueError(f"gallery_labels must have shape ({len(gallery)},), "
                         f"got {gallery_labels.shape}")
    if not np.issubdtype(gallery_labels.dtype, np.integer):
        raise ValueError(f"gallery_labels must be integers, got dtype {gallery_labels.dtype}")
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k must be between 1 and the gallery size {len(gallery)}, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    classes, codes = np.unique(gallery_labels, return_inverse=True)
    gallery_sq = np.einsum('ij,ij->i', gallery, gallery)
    predictions = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        distances, indices = _k_nearest(gallery, gallery_sq, block, k, chunk)
        predictions[start:start + len(block)] = classes[
            _vote(codes[indices], np.sqrt(distances), len(classes))]
    return predictions


def nearest_center_predict(centers, queries) -> np.ndarray:
    """Class of the nearest center (Euclidean) for each query.

    Parameters
    ----------
    centers : array-like or NDArray, (C, D)
        Row ``j`` is the center of class ``j``, e.g. ``center_loss.centers.weight.data()``.
    queries : array-like or NDArray, (M, D)

    Returns
    -------
    numpy.ndarray of int64, (M,)
        Class ids in [0, C); the smaller id on equal distances.
    """
    centers = _numpy(centers).astype(np.float64)
    queries = _numpy(queries).astype(np.float64)
    _check_points(centers, queries, 'centers')
    centers_sq = np.einsum('ij,ij->i', centers, centers)
    return _ranking_scores(queries, centers, centers_sq).argmin(axis=1).astype(np.int64)


def sample_gallery(embeddings: np.ndarray, labels: np.ndarray, max_size: int,
                   seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """At most ``max_size`` rows drawn without replacement, reproducibly from ``seed``.

    Parameters
    ----------
    embeddings : numpy.ndarray, (G, D)
    labels : numpy.ndarray, (G,)
    max_size : int
        Cap on the number of rows, >= 1.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    (embeddings (G', D), labels (G',))
        The inputs themselves when ``G <= max_size``; otherwise ``G' = max_size`` rows kept in
        their original order.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be a positive integer, got {max_size}")
    if len(embeddings) != len(labels):
        raise ValueError(f"embeddings and labels differ in length: "
                         f"{len(embeddings)} != {len(labels)}")
    if len(embeddings) <= max_size:
        return embeddings, labels
    keep = np.sort(np.random.default_rng(seed).choice(len(embeddings), max_size, replace=False))
    return embeddings[keep], labels[keep]


def _progress(loader, max_batches: Optional[int], desc: str):
    """The first ``max_batches`` batches of ``loader`` (all when None) with a tqdm bar."""
    total = len(loader) if hasattr(loader, '__len__') else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    return tqdm(itertools.islice(loader, max_batches), total=total, desc=desc, leave=False)


def _split(batch: mx.nd.NDArray, ctx: Sequence[mx.Context]) -> List[mx.nd.NDArray]:
    """``batch`` split along axis 0 over ``ctx`` (over fewer contexts when it is smaller)."""
    return gluon.utils.split_and_load(batch, ctx[:len(batch)], even_split=False)


def collect_positives(net, loader, ctx: Sequence[mx.Context], max_batches: Optional[int] = None
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
    if not embeddings:
        return (np.zeros((0, net.embed_dim), np.float32), np.zeros(0, np.int64),
                np.zeros(0, np.int64))
    return (np.concatenate(embeddings).astype(np.float32),
            np.concatenate(labels).astype(np.int64),
            np.concatenate(predictions).astype(np.int64))


def _anchors(net) -> mx.nd.NDArray:
    """The net's (1, N, 4) anchors at its ``base_size``, from one pass on a blank image."""
    ctx = next(iter(net.collect_params().values())).list_ctx()[0]
    blank = mx.nd.zeros((1, 3, net.base_size, net.base_size), ctx=ctx)
    with autograd.predict_mode():
        return net.anchor_outputs(blank)[2]


def positive_loader(dataset, net, batch_size: int, num_workers: int = 0,
                    anchors: Optional[mx.nd.NDArray] = None) -> gluon.data.DataLoader:
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

    Returns
    -------
    DataLoader
        In order, last batch kept; yields ``(img (B, 3, S, S), cls_targets (B, N),
        box_targets (B, N, 4))`` with ``S = net.base_size``.
    """
    anchors = _anchors(net) if anchors is None else anchors
    size = net.base_size
    transform = get_train_transform(size, size, anchors, augment=False)
    return gluon.data.DataLoader(dataset.transform(transform), batch_size, shuffle=False,
                                 last_batch='keep', num_workers=num_workers)


def _relabelled(ids: mx.nd.NDArray, embeddings: mx.nd.NDArray,
                relabel: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(B, K, 1) ids with every kept detection (id >= 0) given ``relabel(its embedding)``."""
    ids = ids.asnumpy()
    kept = ids[..., 0] >= 0
    if kept.any():
        ids[kept, 0] = relabel(embeddings.asnumpy()[kept])
    return ids


def detection_map(net, val_loader, ctx: Sequence[mx.Context], classes: Sequence[str],
                  relabel: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                  max_batches: Optional[int] = None) -> Tuple[float, Dict[str, float]]:
    """VOC07 (11-point) mAP at IoU 0.5, as GluonCV's train_ssd.py ``validate()`` computes it.

    Sets the net's NMS to GluonCV's validation values (0.45, top 400), which it keeps; runs in
    predict mode and clips boxes to the input size. Hybridize the net first for speed.

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
    metric = VOC07MApMetric(iou_thresh=IOU_THRESH, class_names=list(classes))
    net.set_nms(nms_thresh=NMS_THRESH, nms_topk=NMS_TOPK)
    infer_embeddings = net.infer_embeddings
    if relabel is not None and not infer_embeddings:
        net.set_embeddings(infer=True)
    try:
        with autograd.predict_mode():
            for batch in _progress(val_loader, max_batches, 'mAP'):
                for x, y in zip(_split(batch[0], ctx), _split(batch[1], ctx)):
                    outputs = net(x)
                    ids, scores, bboxes = outputs[:3]
                    if relabel is not None:
                        ids = _relabelled(ids, outputs[3], relabel)
                    difficult = y.slice_axis(axis=-1, begin=5, end=6) if y.shape[-1] > 5 else None
                    metric.update(bboxes.clip(0, x.shape[2]), ids, scores,
                                  y.slice_axis(axis=-1, begin=0, end=4),
                                  y.slice_axis(axis=-1, begin=4, end=5), difficult)
    finally:
        if net.infer_embeddings != infer_embeddings:
            net.set_embeddings(infer=infer_embeddings)
    names, values = metric.get()
    return float(values[-1]), {name: float(value) for name, value in zip(names[:-1], values[:-1])}


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Fraction of equal entries; None when there are none."""
    return float(np.mean(predictions == labels)) if len(labels) else None


def _finite(value: float) -> Optional[float]:
    """``value``, or None when it is NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


def compare_classifiers(net, centers, train_dataset, val_dataset, ctx: Sequence[mx.Context],
                        classes: Sequence[str], mode: Union[str, Mode], batch_size: int = 16,
                        knn_k: int = 5, gallery_size: int = 20000, seed: int = 0,
                        num_workers: int = 0, max_batches: Optional[int] = None) -> dict:
    """The comparison table of DESIGN.md: mAP and softmax / KNN / nearest-center accuracy.

    Accuracies are over the validation set's positive anchors (matched as in training, no
    augmentation). The KNN gallery is the training set's positive embeddings, capped at
    ``gallery_size`` rows by :func:`sample_gallery`.

    Parameters
    ----------
    net : SSDCenter
        Initialised on ``ctx``.
    centers : array-like, (C, D)
        The learned centers (``center_loss.centers.weight.data()``); unused in softmax mode.
    train_dataset, val_dataset : Dataset
        Items ``(image (H, W, 3) uint8, label (M, 6))``, e.g. from
        :func:`~gluon_ssdcl.data.datasets.get_dataset`.
    ctx : list of mx.Context
    classes : sequence of str
        The C class names.
    mode : str or Mode
        The training mode; ``'softmax'`` has no trained embedding, so no KNN or centers.
    batch_size, num_workers : int
        Loader settings.
    knn_k : int
        Neighbours of the KNN; lowered to the gallery size if that is smaller.
    gallery_size : int
        Cap on the KNN gallery.
    seed : int
        Seed of the gallery sample.
    max_batches : int, optional
        Use only this many batches of each loader (a quick look).

    Returns
    -------
    dict
        JSON-ready: ``mode``, ``map``, ``map_per_class`` ({class: AP}), ``softmax_acc``,
        ``knn_acc``, ``center_acc``, ``knn_map``, ``num_val_positives``, ``gallery_size``,
        ``knn_k``. Cells that do not exist are None: the KNN / center cells and the gallery in
        softmax mode, accuracies without validation positives, APs without ground truth.
    """
    mode = Mode(mode)
    anchors = _anchors(net)
    size = net.base_size
    val_loader = get_val_loader(val_dataset, size, size, batch_size, num_workers)
    val_embeddings, val_labels, softmax_pred = collect_positives(
        net, positive_loader(val_dataset, net, batch_size, num_workers, anchors), ctx,
        max_batches)
    mean_ap, per_class = detection_map(net, val_loader, ctx, classes, max_batches=max_batches)
    results = {'mode': mode.value, 'map': _finite(mean_ap),
               'map_per_class': {name: _finite(ap) for name, ap in per_class.items()},
               'softmax_acc': _accuracy(softmax_pred, val_labels), 'knn_acc': None,
               'center_acc': None, 'knn_map': None, 'num_val_positives': len(val_labels),
               'gallery_size': None, 'knn_k': None}
    if not mode.uses_center:
        return results
    gallery, gallery_labels, _ = collect_positives(
        net, positive_loader(train_dataset, net, batch_size, num_workers, anchors), ctx,
        max_batches)
    gallery, gallery_labels = sample_gallery(gallery, gallery_labels, gallery_size, seed)
    if not len(gallery):
        raise ValueError("the training set has no positive anchors: no KNN gallery")
    if knn_k > len(gallery):
        logger.warning("knn_k=%d is more than the %d gallery embeddings; using k=%d",
                       knn_k, len(gallery), len(gallery))
    knn = functools.partial(knn_predict, gallery, gallery_labels, k=min(knn_k, len(gallery)))
    results.update(
        knn_acc=_accuracy(knn(val_embeddings), val_labels),
        center_acc=_accuracy(nearest_center_predict(centers, val_embeddings), val_labels),
        knn_map=_finite(detection_map(net, val_loader, ctx, classes, relabel=knn,
                                      max_batches=max_batches)[0]),
        gallery_size=len(gallery), knn_k=min(knn_k, len(gallery)))
    return results


def _cell(value) -> str:
    return MISSING if value is None else f'{value:.4f}'


def format_table(results: Union[dict, Sequence[dict]]) -> str:
    """The comparison as a text table, one column per results dict (headed by its mode).

    Rows: mAP, softmax acc, KNN acc, nearest-center acc, mAP relabelled by KNN; a value that
    does not exist (None) shows as "–".
    """
    columns = [results] if isinstance(results, dict) else list(results)
    rows = [('', *(str(r['mode']) for r in columns))]
    rows += [(title, *(_cell(r.get(key)) for r in columns)) for title, key in TABLE_ROWS]
    title_width = max(len(row[0]) for row in rows)
    widths = [max(len(row[i]) for row in rows) for i in range(1, len(columns) + 1)]
    lines = ['  '.join([row[0].ljust(title_width)]
                       + [cell.rjust(width) for cell, width in zip(row[1:], widths)])
             for row in rows]
    lines.insert(1, '-' * len(lines[0]))
    return '\n'.join(lines)


def save_results(results: Union[dict, List[dict]], path: str) -> None:
    """Write ``results`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(results, f, indent=2, allow_nan=False)
            f.write('\n')
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _contexts(gpus: str) -> List[mx.Context]:
    """``''`` -> [cpu()], ``'0,1'`` -> [gpu(0), gpu(1)] (an argparse type)."""
    if not gpus.strip():
        return [mx.cpu()]
    try:
        return [mx.gpu(int(i)) for i in gpus.split(',')]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated GPU ids such as '0,1', got {gpus!r}") from err


def _class_list(text: str) -> List[str]:
    return [name.strip() for name in text.split(',') if name.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m gluon_ssdcl.evaluate',
        description='Evaluate a gluon_ssdcl checkpoint: mAP and softmax vs KNN vs '
                    'nearest-center class accuracy on the validation set.')
    parser.add_argument('--params', required=True, help='checkpoint file (.params)')
    parser.add_argument('--network', help="model name (default: the checkpoint's)")
    parser.add_argument('--dataset', choices=('digits', 'voc', 'custom'),
                        help="data set (default: the checkpoint's)")
    parser.add_argument('--dataset-root', help="data set folder (default: the checkpoint's)")
    parser.add_argument('--classes', type=_class_list,
                        help="comma-separated class names (default: the checkpoint's)")
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--knn-k', type=int, default=5, help='neighbours of the KNN classifier')
    parser.add_argument('--gallery-size', type=int, default=20000,
                        help='cap on the training embeddings used by the KNN')
    parser.add_argument('--gpus', type=_contexts, default='',
                        help="GPU ids such as '0,1'; empty for the CPU")
    parser.add_argument('-j', '--num-workers', type=int, default=0,
                        help='data loader worker processes')
    parser.add_argument('--output', help='JSON file (default: <params>_eval.json)')
    parser.add_argument('--skip-bad', action='store_true',
                        help='leave out images with errors instead of stopping')
    return parser


def _default_output(params: str) -> str:
    root, ext = os.path.splitext(params)
    return f"{root if ext == '.params' else params}_eval.json"


def _evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """Build the network from ``args.params`` and run :func:`compare_classifiers`."""
    checkpoint = load_checkpoint(args.params)
    meta = checkpoint.meta
    missing = [key for key in ('network', 'classes', 'embed_dim', 'mode', 'dataset')
               if key not in meta]
    if missing:
        raise ValueError(f"{args.params} lacks {', '.join(missing)} in its metadata")
    classes = args.classes or meta['classes']
    if len(classes) != len(meta['classes']):
        raise ValueError(f"--classes names {len(classes)} classes, but {args.params} was "
                         f"trained with {len(meta['classes'])}")
    net = get_model(args.network or meta['network'], classes=classes,
                    embed_dim=meta['embed_dim'], pretrained_base=False)
    try:
        restore(checkpoint, net, ctx=args.gpus)
    except AssertionError as err:  # Block.load_parameters asserts on missing parameters
        raise ValueError(f"{args.params} does not fit {args.network or meta['network']}: "
                         f"{err}") from err
    net.hybridize()
    mode = Mode(meta['mode'])
    if mode.uses_center and checkpoint.centers is None:
        raise ValueError(f"{args.params} has no centers, but its mode is {mode.value}")
    centers = None if checkpoint.centers is None else checkpoint.centers.asnumpy()
    dataset = args.dataset or meta['dataset']
    train_dataset, val_dataset = get_dataset(
        dataset, args.dataset_root or meta.get('dataset_root'),
        classes=classes if dataset == 'custom' else None, skip_bad=args.skip_bad)
    return compare_classifiers(
        net, centers, train_dataset, val_dataset, args.gpus, classes, mode,
        batch_size=args.batch_size, knn_k=args.knn_k, gallery_size=args.gallery_size,
        seed=meta.get('seed', 0), num_workers=args.num_workers)


def _without_trace(message: str) -> str:
    """``message`` with an MXNet stack trace (which MXNet errors carry) cut down to its last
    line, the reason."""
    head, found, trace = message.partition('Traceback (most recent call last):')
    return head + trace.strip().splitlines()[-1] if found else message


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: evaluate a checkpoint, print the table, write the JSON results.

    Returns 0, or 2 after printing ``error: ...`` to stderr (missing or bad checkpoint, bad data
    set); argparse exits with 2 on bad flags.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    output = args.output or _default_output(args.params)
    try:
        results = _evaluate_checkpoint(args)
        save_results(results, output)
    except (OSError, ValueError, mx.base.MXNetError) as err:
        print(f'error: {_without_trace(str(err))}', file=sys.stderr)
        return 2
    print(format_table(results))
    logger.info('results written to %s', output)
    return 0


if __name__ == '__main__':
    sys.exit(main())
