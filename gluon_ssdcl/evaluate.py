"""The comparison table: mAP and softmax / k-NN / nearest-center accuracy of a trained model.

On the validation set's positive anchors (anchors matched to a ground-truth box exactly as in
training): the class accuracy of the softmax head, of a k-NN classifier over the training set's
positive embeddings, and of the nearest learned center; plus the VOC07 mAP of the detector as
trained and with every detection relabelled by k-NN.

Run ``python -m gluon_ssdcl.evaluate --params runs/<run>_best.params`` to print the table and
write ``runs/<run>_best_eval.json`` beside the checkpoint. The model, classes, mode and data set
are read from the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from typing import List, Optional, Sequence, Union

import mxnet as mx
import numpy as np

from .checkpoint import load_model
from .cli_tools import (CommandError, OneLineErrorParser, add_checkpoint_flag, add_gpus_flag,
                        add_knn_flag, add_loader_flags, contexts, positive_int, program, run)
from .data.datasets import get_dataset, get_val_loader
from .files import atomic_path
from .inference import (build_gallery, collect_positives, detection_map, net_anchors,
                        positive_loader)
from .knn import knn_classifier, nearest_center_predict
from .loss import Mode
from .metrics import compactness, confusion_rates

__all__ = ['compare_classifiers', 'format_table', 'save_results', 'main']

logger = logging.getLogger(__name__)

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


def _finite(value: float) -> Optional[float]:
    """``value``, or None when it is NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


def _mean(values) -> Optional[float]:
    """The mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _class_means(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, D) mean embedding of each class (NaN rows for a class without embeddings)."""
    means = np.full((num_classes, embeddings.shape[1]), np.nan)
    for j in np.unique(labels):
        means[j] = embeddings[labels == j].mean(axis=0)
    return means


def _separation(embeddings, labels, predictions, classes, centers=None) -> dict:
    """Compactness (around the class means, and around ``centers`` when given) and the
    confusable-digit rates of ``predictions`` ({name: labels}), each with its summary."""
    present = np.unique(labels)
    means = _class_means(embeddings, labels, len(classes))
    names = [classes[j] for j in present]
    spread = compactness(embeddings, np.searchsorted(present, labels), means[present], names)
    result = {'compactness': spread,
              'compactness_ratio': _mean(c['ratio'] for c in spread.values())}
    if centers is not None:
        around = compactness(embeddings, labels, centers, classes)
        result.update(center_compactness=around, center_compactness_ratio=_mean(
            c['ratio'] for c in around.values()))
    result['confusions'] = {name: confusion_rates(labels, predicted, classes)
                            for name, predicted in predictions.items()}
    for name, rates in result['confusions'].items():
        result[f'confusion_{name}'] = _mean(rates.values())
    return result


def compare_classifiers(net, centers, train_dataset, val_dataset, ctx: Sequence[mx.Context],
                        classes: Sequence[str], mode: Union[str, Mode], batch_size: int = 16,
                        knn_k: int = 5, gallery_size: int = 20000, seed: int = 0,
                        num_workers: int = 0, max_batches: Optional[int] = None) -> dict:
    """The comparison table: mAP and softmax / k-NN / nearest-center accuracy.

    Accuracies are over the validation set's positive anchors (matched as in training, no
    augmentation). The KNN gallery is the training set's positive embeddings, capped at
    ``gallery_size`` rows (:func:`~gluon_ssdcl.inference.build_gallery`).

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
        ``knn_k``; how the validation embeddings separate the classes (:mod:`gluon_ssdcl.metrics`):
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
    results = {'mode': mode.value, 'map': _finite(mean_ap),
               'map_per_class': {name: _finite(ap) for name, ap in per_class.items()},
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
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(results, f, indent=2, allow_nan=False)
            f.write('\n')


def _class_list(text: str) -> List[str]:
    return [name.strip() for name in text.split(',') if name.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog='python -m gluon_ssdcl.evaluate',
        description='Evaluate a gluon_ssdcl checkpoint: mAP and softmax vs k-NN vs '
                    'nearest-center class accuracy on the validation set.')
    add_checkpoint_flag(parser)
    parser.add_argument('--dataset', choices=('digits', 'voc', 'custom'),
                        help="data set (default: the checkpoint's)")
    parser.add_argument('--dataset-root', help="data set folder (default: the checkpoint's)")
    parser.add_argument('--classes', type=_class_list,
                        help="comma-separated class names (default: the checkpoint's)")
    add_loader_flags(parser)
    add_knn_flag(parser)
    parser.add_argument('--gallery-size', type=positive_int, default=20000,
                        help='cap on the training embeddings used by the k-NN (default: 20000)')
    add_gpus_flag(parser)
    parser.add_argument('--output', help='JSON file (default: <params>_eval.json)')
    parser.add_argument('--skip-bad', action='store_true',
                        help='leave out images with errors instead of stopping')
    return parser


def _default_output(params: str) -> str:
    root, ext = os.path.splitext(params)
    return f"{root if ext == '.params' else params}_eval.json"


def _evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """Build the network from ``args.params`` and run :func:`compare_classifiers`."""
    ctx = contexts(args.gpus)
    net, center_loss, checkpoint = load_model(args.params, ctx)
    meta = checkpoint.meta
    classes = args.classes or meta['classes']
    if len(classes) != len(meta['classes']):
        raise CommandError(f"--classes names {len(classes)} classes, but {args.params} was "
                           f"trained with {len(meta['classes'])}")
    net.hybridize()
    dataset = args.dataset or meta['dataset']
    train_dataset, val_dataset = get_dataset(
        dataset, args.dataset_root or meta.get('dataset_root'),
        classes=classes if dataset == 'custom' else None, skip_bad=args.skip_bad)
    return compare_classifiers(
        net, center_loss.centers.weight.data(ctx[0]), train_dataset, val_dataset, ctx, classes,
        meta['mode'], batch_size=args.batch_size, knn_k=args.knn_k,
        gallery_size=args.gallery_size, seed=meta.get('seed', 0), num_workers=args.num_workers)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: evaluate a checkpoint, print the table, write the JSON results.

    Returns 0, or 1 after one ``error: ...`` line on stderr (missing, unreadable or mismatched
    checkpoint, bad data set, no GPU); bad flags exit with 2.
    """
    args = _parser().parse_args(argv)
    output = args.output or _default_output(args.params)

    def evaluate() -> int:
        results = _evaluate_checkpoint(args)
        save_results(results, output)
        print(format_table(results))
        logger.info('results written to %s', output)
        return 0
    return run(evaluate)


if __name__ == '__main__':
    program(main)
