"""The comparison table: mAP and softmax / k-NN / nearest-center accuracy of a trained model.

On the validation set's positive anchors (anchors matched to a ground-truth box exactly as in
training): the class accuracy of the softmax head, of a k-NN classifier over the training set's
positive embeddings, and of the nearest learned center; plus the VOC07 mAP of the detector as
trained and with every detection relabelled by k-NN.

Run ``python -m gluon_ssdcl.evaluate --params runs/<run>_best.params`` to print the table and
write ``runs/<run>_best_eval.json`` beside the checkpoint. The model, classes, mode and data set
are read from the checkpoint.

``--open-set --unknown-classes 8,9`` evaluates instead how well a model trained without those
classes (``train_ssd_center.py --digits-exclude 8,9``) tells their digits from the known ones
(:func:`open_set_evaluation`), written to ``<params>_openset.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np

from .checkpoint import load_model
from .cli_tools import (CommandError, OneLineErrorParser, add_checkpoint_flag, add_gpus_flag,
                        add_knn_flag, add_loader_flags, contexts, positive_int, program, run)
from .data.datasets import get_dataset, get_val_loader
from .files import atomic_path
from .inference import (IOU_THRESH, build_gallery, collect_positives, detection_map,
                        detections_map, net_anchors, positive_loader, validation_detections)
from .knn import knn_classifier, nearest_center_predict
from .loss import Mode
from .metrics import auroc, compactness, confusion_rates, rejected_at_recall
from .openset import (DEFAULT_QUANTILE, UNKNOWN_ID, checkpoint_bank, class_means, class_radii,
                      knn_scores, make_bank, unknown_scores)

__all__ = ['compare_classifiers', 'format_table', 'save_results', 'OPEN_SET_SCORES',
           'match_detections', 'open_set_evaluation', 'format_open_set', 'main']

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


def _separation(embeddings, labels, predictions, classes, centers=None) -> dict:
    """Compactness (around the class means, and around ``centers`` when given) and the
    confusable-digit rates of ``predictions`` ({name: labels}), each with its summary."""
    present = np.unique(labels)
    means = class_means(embeddings, labels, len(classes))
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


# unknown scores compared by --open-set (higher: more likely unknown)
OPEN_SET_SCORES = ('center', 'means', 'msp', 'knn')
RADIUS_QUANTILES = (0.9, 0.95, 0.99)  # the radius rule measured at these quantiles
RECALL = 0.95  # the threshold keeps this fraction of known-class true positives
MIN_SCORES = (0.0, 0.5)  # detections of at least these scores (0.5: detect's --thresh)


def match_detections(image, unknown: Sequence[int], min_score: float = 0.0
                     ) -> Tuple[List[int], List[int]]:
    """The detections that box each ground-truth object of one image.

    For each object, the highest-scoring detection with IoU >= 0.5 (and score >=
    ``min_score``): any class for an object of an ``unknown`` class, the object's own class for
    a known one (a true positive).

    Parameters
    ----------
    image : gluon_ssdcl.inference.ImageDetections
    unknown : sequence of int
        The unknown class ids.
    min_score : float

    Returns
    -------
    (known, unknown) : (list of int, list of int)
        Indices into the image's detections: the known objects' true positives and the unknown
        objects' detections (objects without one are left out; a detection may serve several).
    """
    from gluoncv.utils.bbox import bbox_iou  # pylint: disable=import-outside-toplevel
    known_hits, unknown_hits = [], []
    if not len(image.ids) or not len(image.gt_ids):
        return known_hits, unknown_hits
    iou = bbox_iou(image.bboxes, image.gt_bboxes)  # (K, M)
    for j, gt_class in enumerate(image.gt_ids.astype(np.int64)):
        is_unknown = gt_class in unknown
        ok = (iou[:, j] >= IOU_THRESH) & (image.scores >= min_score)
        if not is_unknown:
            ok &= image.ids.astype(np.int64) == gt_class
        if ok.any():
            best = int(np.flatnonzero(ok)[np.argmax(image.scores[ok])])
            (unknown_hits if is_unknown else known_hits).append(best)
    return known_hits, unknown_hits


def _score_sets(images, bank, means_bank, unknown, min_score, knn_k):
    """``{score name: (known TP scores, unknown scores)}`` and the matched embeddings."""
    embeddings = {'known': [], 'unknown': []}
    det_scores = {'known': [], 'unknown': []}
    for image in images:
        for key, hits in zip(('known', 'unknown'), match_detections(image, unknown, min_score)):
            embeddings[key].extend(image.embeddings[hits])
            det_scores[key].extend(image.scores[hits])
    dim = bank.centers.shape[1]
    embeddings = {k: np.asarray(v, np.float32).reshape(-1, dim) for k, v in embeddings.items()}
    scores = {
        'center': tuple(unknown_scores(bank, embeddings[k])[1] for k in ('known', 'unknown')),
        'means': tuple(unknown_scores(means_bank, embeddings[k])[1]
                       for k in ('known', 'unknown')),
        'msp': tuple(1 - np.asarray(det_scores[k], np.float64) for k in ('known', 'unknown')),
        'knn': tuple(knn_scores(bank, embeddings[k], knn_k) for k in ('known', 'unknown'))}
    return scores, embeddings


def _radius_rule(bank, embeddings) -> dict:
    """Fractions of known TPs and unknowns outside their nearest center's radius, with the
    radii at each of :data:`RADIUS_QUANTILES`."""
    rule = {}
    for quantile in RADIUS_QUANTILES:
        radii = class_radii(bank.gallery, bank.gallery_labels, bank.centers, quantile)
        at = bank._replace(radii=np.where(bank.active, radii, np.nan))
        rule[f'{quantile:g}'] = {
            f'{key}_rejected': (float(np.mean(unknown_scores(at, embeddings[key])[1] > 1))
                                if len(embeddings[key]) else None)
            for key in ('known', 'unknown')}
    return rule


def _rejecting(images, bank):
    """The images with every detection outside its nearest center's radius labelled unknown
    (the class head's label kept otherwise)."""
    out = []
    for image in images:
        ids = image.ids
        if len(ids):
            ids = np.where(unknown_scores(bank, image.embeddings)[1] > 1, UNKNOWN_ID, ids)
        out.append(image._replace(ids=ids.astype(np.float32)))
    return out


def _known_map(per_class: Dict[str, float], known: Sequence[str]) -> Optional[float]:
    return _mean(_finite(per_class[name]) for name in known)


def open_set_evaluation(images, bank, classes: Sequence[str], unknown: Sequence[int],
                        knn_k: int = 5) -> dict:
    """How well the unknown scores tell held-out classes' objects from known ones.

    Over the validation images' detections (:func:`~gluon_ssdcl.inference.collect_detections`
    with embeddings): the objects of the ``unknown`` classes boxed by some detection (IoU >=
    0.5, its best-scoring one) against the known objects' true positives (:func:`match_detections`).
    Scores, higher meaning more likely unknown: ``center`` (distance to the nearest center over
    its radius, the bank's centers), ``means`` (the same around the training class means),
    ``msp`` (1 - the detection's softmax probability) and ``knn`` (mean distance to the k
    nearest training embeddings).

    Parameters
    ----------
    images : list of ImageDetections
        With embeddings.
    bank : gluon_ssdcl.openset.ClassBank
        Fitted on the training data, which has none of the unknown classes.
    classes : sequence of str
        The model's class names.
    unknown : sequence of int
        The held-out class ids.
    knn_k : int

    Returns
    -------
    dict
        JSON-ready. Per minimum detection score (``'0'``, ``'0.5'``): ``num_known`` (known TPs),
        ``num_unknown`` (unknown objects boxed), ``num_unknown_objects``, and per score
        ``auroc``, ``threshold`` and ``rejected`` (the fraction of unknowns above the threshold
        that keeps 95% of the known TPs); ``radius_rule``: per radius quantile, the fractions
        of known TPs and unknowns beyond the radius; ``map_known`` (mAP over the known classes,
        class-head labels) and ``map_known_rejecting`` (the same with detections beyond the
        radius labelled unknown); ``summary``: the flat numbers of the study.
    """
    known_names = [name for j, name in enumerate(classes) if j not in unknown]
    means_bank = make_bank(classes, bank.gallery, bank.gallery_labels, None, bank.quantile)
    results = {'unknown_classes': [classes[j] for j in unknown], 'quantile': bank.quantile,
               'center_source': bank.center_source, 'knn_k': knn_k, 'by_min_score': {}}
    summary = {}
    num_unknown_objects = int(sum(np.isin(image.gt_ids, unknown).sum() for image in images))
    for min_score in MIN_SCORES:
        scores, embeddings = _score_sets(images, bank, means_bank, unknown, min_score, knn_k)
        entry = {'num_known': len(embeddings['known']), 'num_unknown': len(embeddings['unknown']),
                 'num_unknown_objects': num_unknown_objects}
        tag = '' if min_score == 0 else f'_s{min_score:g}'
        for name, (known_scores, unknown_scores_) in scores.items():
            threshold, rejected = rejected_at_recall(known_scores, unknown_scores_, RECALL)
            entry[name] = {'auroc': auroc(known_scores, unknown_scores_),
                           'threshold': threshold, 'rejected': rejected}
            summary[f'auroc_{name}{tag}'] = entry[name]['auroc']
            summary[f'rejected95_{name}{tag}'] = rejected
        entry['radius_rule'] = _radius_rule(bank, embeddings)
        summary[f'boxed_unknown{tag}'] = (entry['num_unknown'] / num_unknown_objects
                                          if num_unknown_objects else None)
        results['by_min_score'][f'{min_score:g}'] = entry
    at_default = results['by_min_score']['0']['radius_rule'][f'{bank.quantile:g}'] \
        if bank.quantile in RADIUS_QUANTILES else None
    if at_default:
        summary.update(known_rejected_radius=at_default['known_rejected'],
                       unknown_rejected_radius=at_default['unknown_rejected'])
    _, per_class = detections_map(images, classes)
    _, rejecting = detections_map(_rejecting(images, bank), classes)
    results.update(map_per_class={k: _finite(v) for k, v in per_class.items()},
                   map_known=_known_map(per_class, known_names),
                   map_known_rejecting=_known_map(rejecting, known_names))
    summary.update(map_known=results['map_known'],
                   map_known_rejecting=results['map_known_rejecting'])
    results['summary'] = summary
    return results


def format_open_set(results: dict) -> str:
    """The open-set results as a text table: one row per score and minimum detection score."""
    lines = [f"unknown classes {','.join(results['unknown_classes'])}; radii at quantile "
             f"{results['quantile']:g} ({results['center_source']} centers)",
             f"{'score':<8} {'min det score':>13} {'AUROC':>7} {'rejected@95%':>13}"]
    for min_score, entry in results['by_min_score'].items():
        for name in OPEN_SET_SCORES:
            lines.append(f"{name:<8} {min_score:>13} {_cell(entry[name]['auroc']):>7} "
                         f"{_cell(entry[name]['rejected']):>13}")
        lines.append(f"  ({entry['num_unknown']} of {entry['num_unknown_objects']} unknown "
                     f"objects boxed, {entry['num_known']} known true positives)")
    for quantile, rule in results['by_min_score']['0']['radius_rule'].items():
        lines.append(f"radius rule, quantile {quantile}: known TPs rejected "
                     f"{_cell(rule['known_rejected'])}, unknowns rejected "
                     f"{_cell(rule['unknown_rejected'])}")
    lines.append(f"mAP of the known classes {_cell(results['map_known'])}, rejecting beyond "
                 f"the radius {_cell(results['map_known_rejecting'])}")
    return '\n'.join(lines)


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
    parser.add_argument('--output', help='JSON file (default: <params>_eval.json, with '
                                         '--open-set <params>_openset.json)')
    parser.add_argument('--open-set', action='store_true',
                        help='evaluate the rejection of --unknown-classes instead (a model '
                             'trained without them: train_ssd_center.py --digits-exclude)')
    parser.add_argument('--unknown-classes', type=_class_list,
                        help='--open-set: comma-separated names of the held-out classes')
    parser.add_argument('--quantile', type=_quantile, default=DEFAULT_QUANTILE,
                        help=f'--open-set: quantile of the class radii (default: '
                             f'{DEFAULT_QUANTILE})')
    parser.add_argument('--max-images', type=positive_int, default=None,
                        help='--open-set: use only the first images of each split (a quick '
                             'look)')
    parser.add_argument('--skip-bad', action='store_true',
                        help='leave out images with errors instead of stopping')
    return parser


def _quantile(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _default_output(params: str, suffix: str = 'eval') -> str:
    root, ext = os.path.splitext(params)
    return f"{root if ext == '.params' else params}_{suffix}.json"


def _evaluate_open_set(args: argparse.Namespace) -> dict:
    """Load ``args.params``, fit its class bank on its training data and run
    :func:`open_set_evaluation` on its validation images."""
    ctx = contexts(args.gpus)
    model = load_model(args.params, ctx)
    classes, meta = model.classes, model.checkpoint.meta
    missing = [name for name in args.unknown_classes if name not in classes]
    if missing:
        raise CommandError(f"--unknown-classes: {', '.join(missing)} not among the classes of "
                           f"{model.checkpoint.path} ({', '.join(classes)})")
    model.net.hybridize()
    bank = checkpoint_bank(model, ctx, args.batch_size, args.gallery_size, args.quantile,
                           args.num_workers, args.max_images, registered=False)
    unknown = [classes.index(name) for name in args.unknown_classes]
    seen = sorted(classes[j] for j in unknown if bank.active[j])
    if seen:
        raise CommandError(f"--unknown-classes: {', '.join(seen)} had training positives in "
                           f"{meta.get('dataset_root')}: train without them (--digits-exclude)")
    dataset = args.dataset or meta['dataset']
    _, val_dataset = get_dataset(dataset, args.dataset_root or meta.get('dataset_root'),
                                 classes=classes if dataset == 'custom' else None,
                                 skip_bad=args.skip_bad)
    images = validation_detections(model.net, val_dataset, ctx, args.batch_size,
                                   args.num_workers, args.max_images)
    return open_set_evaluation(images, bank, classes, unknown, args.knn_k)


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
    parser = _parser()
    args = parser.parse_args(argv)
    if args.open_set and not args.unknown_classes:
        parser.error("--open-set needs --unknown-classes (the classes held out of training)")
    if args.unknown_classes and not args.open_set:
        parser.error("--unknown-classes is for --open-set")
    output = args.output or _default_output(args.params, 'openset' if args.open_set else 'eval')

    def evaluate() -> int:
        if args.open_set:
            results = _evaluate_open_set(args)
            save_results(results, output)
            print(format_open_set(results))
        else:
            results = _evaluate_checkpoint(args)
            save_results(results, output)
            print(format_table(results))
        logger.info('results written to %s', output)
        return 0
    return run(evaluate)


if __name__ == '__main__':
    program(main)
