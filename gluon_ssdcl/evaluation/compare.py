"""The comparison table: mAP and softmax / k-NN / nearest-center accuracy of a trained model.

On the validation set's positive anchors (anchors matched to a ground-truth box exactly as in
training): the class accuracy of the softmax head, of a k-NN classifier over the training set's
positive embeddings, and of the nearest learned center; plus the VOC07 mAP of the detector as
trained and with every detection relabelled by k-NN (``gluon-ssdcl evaluate`` prints it).
"""
from __future__ import annotations

import json
from typing import List, Optional, Sequence, Union

import mxnet as mx
import numpy as np

from ..data.datasets import get_val_loader
from ..data.digitset import CONFUSABLE_DIGITS
from ..embeddings.class_bank import class_means
from ..embeddings.knn import knn_classifier, nearest_center_predict
from ..embeddings.metrics import compactness, confusion_rates
from ..losses.multibox import Mode
from ..utils.arrays import finite_or_none, mean_or_none
from ..utils.files import atomic_path
from .inference import build_gallery, collect_positives, detection_map, net_anchors, positive_loader

__all__ = ['compare_classifiers', 'format_table', 'format_cell', 'save_results', 'TABLE_ROWS']

MISSING = '–'  # table cell of a value that does not exist (e.g. k-NN in softmax mode)

# (row title, result key) of the comparison table
TABLE_ROWS = (('mAP', 'map'), ('softmax acc', 'softmax_acc'), ('KNN acc', 'knn_acc'),
              ('nearest-center acc', 'center_acc'), ('mAP relabelled by KNN', 'knn_map'),
              ('spread / gap (class means)', 'compactness_ratio'),
              ('spread / gap (centers)', 'center_compactness_ratio'),
              ('confusable digits, softmax', 'confusion_softmax'),
              ('confusable digits, KNN', 'confusion_knn'),
              ('confusable digits, center', 'confusion_center'))


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Fraction of equal entries; None when there are none."""
    return float(np.mean(predictions == labels)) if len(labels) else None


def _separation(embeddings, labels, predictions, classes, centers=None) -> dict:
    """Compactness (around the class means, and around ``centers`` when given) and the
    confusable-digit rates of ``predictions`` ({name: labels}), each with its summary."""
    present = np.unique(labels)
    means = class_means(embeddings, labels, len(classes))
    names = [classes[j] for j in present]
    spread = compactness(embeddings, np.searchsorted(present, labels), means[present], names)
    result = {'compactness': spread,
              'compactness_ratio': mean_or_none(c['ratio'] for c in spread.values())}
    if centers is not None:
        around = compactness(embeddings, labels, centers, classes)
        result.update(center_compactness=around, center_compactness_ratio=mean_or_none(
            c['ratio'] for c in around.values()))
    result['confusions'] = {name: confusion_rates(labels, predicted, classes,
                                                  CONFUSABLE_DIGITS)
                            for name, predicted in predictions.items()}
    for name, rates in result['confusions'].items():
        result[f'confusion_{name}'] = mean_or_none(rates.values())
    return result


def compare_classifiers(net, centers, train_dataset, val_dataset, ctx: Sequence[mx.Context],
                        classes: Sequence[str], mode: Union[str, Mode], batch_size: int = 16,
                        knn_k: int = 5, gallery_size: int = 20000, seed: int = 0,
                        num_workers: int = 0, max_batches: Optional[int] = None) -> dict:
    """The comparison table: mAP and softmax / k-NN / nearest-center accuracy.

    Accuracies are over the validation set's positive anchors (matched as in training, no
    augmentation). The KNN gallery is the training set's positive embeddings, capped at
    ``gallery_size`` rows (:func:`~gluon_ssdcl.evaluation.inference.build_gallery`).

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
        ``knn_k``; how the validation embeddings separate the classes
        (:mod:`gluon_ssdcl.embeddings.metrics`):
        ``compactness`` ({class: {distance, ratio}} around the class means, every mode) and its
        mean ``compactness_ratio``, ``center_compactness`` and ``center_compactness_ratio``
        (around the learned centers), ``confusions`` ({'softmax' / 'knn' / 'center': {'a->b':
        rate}}, the confusable digits) and their means ``confusion_softmax``, ``confusion_knn``,
        ``confusion_center``. Cells that do not exist are None: the KNN / center cells and the
        gallery in softmax mode, accuracies without validation positives, APs without ground
        truth, rates of classes without positives.
    """
    mode = Mode(mode)
    anchors = net_anchors(net)
    size = net.base_size
    val_loader = get_val_loader(val_dataset, size, size, batch_size, num_workers)
    val_embeddings, val_labels, softmax_pred = collect_positives(
        net, positive_loader(val_dataset, net, batch_size, num_workers, anchors), ctx,
        max_batches)
    mean_ap, per_class = detection_map(net, val_loader, ctx, classes, max_batches=max_batches)
    results = {'mode': mode.value, 'map': finite_or_none(mean_ap),
               'map_per_class': {name: finite_or_none(ap) for name, ap in per_class.items()},
               'softmax_acc': _accuracy(softmax_pred, val_labels), 'knn_acc': None,
               'center_acc': None, 'knn_map': None, 'num_val_positives': len(val_labels),
               'gallery_size': None, 'knn_k': None, 'center_compactness': None,
               'center_compactness_ratio': None, 'confusion_knn': None, 'confusion_center': None}
    if not mode.uses_center:
        results.update(_separation(val_embeddings, val_labels, {'softmax': softmax_pred},
                                   classes))
        return results
    gallery, gallery_labels = build_gallery(net, train_dataset, ctx, batch_size, gallery_size,
                                            seed, num_workers, anchors, max_batches)
    knn = knn_classifier(gallery, gallery_labels, knn_k)
    predictions = {'softmax': softmax_pred, 'knn': knn(val_embeddings),
                   'center': nearest_center_predict(centers, val_embeddings)}
    results.update(_separation(val_embeddings, val_labels, predictions, classes, centers))
    results.update(
        knn_acc=_accuracy(predictions['knn'], val_labels),
        center_acc=_accuracy(predictions['center'], val_labels),
        knn_map=finite_or_none(detection_map(net, val_loader, ctx, classes, relabel=knn,
                                      max_batches=max_batches)[0]),
        gallery_size=len(gallery), knn_k=min(knn_k, len(gallery)))
    return results


# unknown scores compared by --open-set (higher: more likely unknown)


def format_cell(value) -> str:
    """A number of a results table with 4 decimals, or a dash for a missing one."""
    return MISSING if value is None else f'{value:.4f}'


def format_table(results: Union[dict, Sequence[dict]]) -> str:
    """The comparison as a text table, one column per results dict (headed by its mode).

    Rows: mAP, softmax acc, KNN acc, nearest-center acc, mAP relabelled by KNN; a value that
    does not exist (None) shows as "–".
    """
    columns = [results] if isinstance(results, dict) else list(results)
    rows = [('', *(str(r['mode']) for r in columns))]
    rows += [(title, *(format_cell(r.get(key)) for r in columns)) for title, key in TABLE_ROWS]
    title_width = max(len(row[0]) for row in rows)
    widths = [max(len(row[i]) for row in rows) for i in range(1, len(columns) + 1)]
    lines = ['  '.join([row[0].ljust(title_width)]
                       + [cell.rjust(width) for cell, width in zip(row[1:], widths)])
             for row in rows]
    lines.insert(1, '-' * len(lines[0]))
    return '\n'.join(lines)


def save_results(results: Union[dict, List[dict]], path: str) -> None:
    """Write ``results`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(results, f, indent=2, allow_nan=False)
            f.write('\n')
