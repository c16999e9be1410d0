"""Open-set evaluation: how well a model trained without some classes tells their objects from
the known ones (``gluon-ssdcl evaluate --open-set``).

Each validation detection is matched to a ground-truth box (:func:`match_detections`); the
known-class true positives and the held-out classes' objects are scored by every
:data:`OPEN_SET_SCORES` rule, and the AUROC and the share of unknowns rejected at a recall of
the known true positives are reported.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..embeddings.class_bank import UNKNOWN_ID, class_radii, knn_scores, make_bank, unknown_scores
from ..embeddings.metrics import auroc, rejected_at_recall
from ..embeddings.scores import REJECTION_RULES, SCORES, rejection_rule, unknown_score
from ..utils.arrays import finite_or_none, mean_or_none
from .compare import format_cell
from .inference import IOU_THRESH, detections_map

__all__ = ['OPEN_SET_SCORES', 'match_detections', 'score_sets', 'open_set_evaluation',
           'format_open_set']

OPEN_SET_SCORES = ('center', 'means', 'msp', 'knn') + SCORES
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
    image : gluon_ssdcl.evaluation.inference.ImageDetections
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


def score_sets(images, bank, scorer, unknown: Sequence[int], min_score: float = 0.0,
               knn_k: int = 5):
    """Every :data:`OPEN_SET_SCORES` score of the known true positives and of the unknown
    objects' detections (:func:`match_detections`; the scores of :func:`open_set_evaluation`).

    Parameters
    ----------
    images : list of ImageDetections
        With embeddings.
    bank : ClassBank
    scorer : ScoreModel
    unknown : sequence of int
    min_score : float
    knn_k : int

    Returns
    -------
    scores : dict
        ``{score name: (known TPs' scores (P,), unknowns' scores (Q,))}``.
    embeddings : dict
        ``{'known': (P, D), 'unknown': (Q, D)}``.
    unknown_ids : numpy.ndarray of int64, (Q,)
        The class head's labels of the unknowns' detections.
    """
    means_bank = make_bank(bank.classes, bank.gallery, bank.gallery_labels, None, bank.quantile)
    embeddings = {'known': [], 'unknown': []}
    det_scores = {'known': [], 'unknown': []}
    unknown_ids = []
    for image in images:
        for key, hits in zip(('known', 'unknown'), match_detections(image, unknown, min_score)):
            embeddings[key].extend(image.embeddings[hits])
            det_scores[key].extend(image.scores[hits])
            if key == 'unknown':
                unknown_ids.extend(image.ids[hits].astype(np.int64))
    dim = bank.centers.shape[1]
    embeddings = {k: np.asarray(v, np.float32).reshape(-1, dim) for k, v in embeddings.items()}
    scores = {
        'center': tuple(unknown_scores(bank, embeddings[k])[1] for k in ('known', 'unknown')),
        'means': tuple(unknown_scores(means_bank, embeddings[k])[1]
                       for k in ('known', 'unknown')),
        'msp': tuple(1 - np.asarray(det_scores[k], np.float64) for k in ('known', 'unknown')),
        'knn': tuple(knn_scores(bank, embeddings[k], knn_k) for k in ('known', 'unknown'))}
    for name in SCORES:
        scores[name] = tuple(unknown_score(scorer, name, embeddings[k])
                             for k in ('known', 'unknown'))
    return scores, embeddings, np.asarray(unknown_ids, np.int64)


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


def _rejecting(images, is_unknown):
    """The images with every detection whose embedding ``is_unknown`` ((M, D) -> (M,) bool)
    labelled unknown (the class head's label kept otherwise)."""
    out = []
    for image in images:
        ids = image.ids
        if len(ids):
            ids = np.where(is_unknown(image.embeddings), UNKNOWN_ID, ids)
        out.append(image._replace(ids=ids.astype(np.float32)))
    return out


def _known_map(per_class: Dict[str, float], known: Sequence[str]) -> Optional[float]:
    return mean_or_none(finite_or_none(per_class[name]) for name in known)


def open_set_evaluation(images, bank, scorer, classes: Sequence[str], unknown: Sequence[int],
                        knn_k: int = 5) -> dict:
    """How well the unknown scores tell held-out classes' objects from known ones.

    Over the validation images' detections
    (:func:`~gluon_ssdcl.evaluation.inference.collect_detections`
    with embeddings): the objects of the ``unknown`` classes boxed by some detection (IoU >=
    0.5, its best-scoring one) against the known objects' true positives (:func:`match_detections`).
    Scores, higher meaning more likely unknown: ``center`` (distance to the nearest center over
    its radius, the bank's centers), ``means`` (the same around the training class means),
    ``msp`` (1 - the detection's softmax probability), ``knn`` (mean distance to the k
    nearest training embeddings), and the post-hoc ``energy``, ``cosine``, ``mahalanobis`` and
    ``gaussian`` (:mod:`gluon_ssdcl.embeddings.scores`).

    Parameters
    ----------
    images : list of ImageDetections
        With embeddings.
    bank : gluon_ssdcl.embeddings.class_bank.ClassBank
        Fitted on the training data, which has none of the unknown classes.
    scorer : gluon_ssdcl.embeddings.scores.ScoreModel
        Fitted on the bank and the model's class head.
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
        that keeps 95% of the known TPs; 1 - rejected is the FPR at 95% TPR); ``radius_rule``:
        per radius quantile, the fractions of known TPs and unknowns beyond the radius;
        ``unknown_labelled_as``: the fraction of the boxed unknowns the class head gives each
        class; ``map_known`` (mAP over the known classes, class-head labels) and
        ``map_known_rejecting``: per rule (``center``: beyond the nearest center's radius; each
        post-hoc score above its threshold) the same with the rejected detections labelled
        unknown; ``summary``: the flat numbers of the study.
    """
    known_names = [name for j, name in enumerate(classes) if j not in unknown]
    results = {'unknown_classes': [classes[j] for j in unknown], 'quantile': bank.quantile,
               'center_source': bank.center_source, 'knn_k': knn_k, 'by_min_score': {}}
    summary = {}
    num_unknown_objects = int(sum(np.isin(image.gt_ids, unknown).sum() for image in images))
    for min_score in MIN_SCORES:
        scores, embeddings, unknown_ids = score_sets(images, bank, scorer, unknown, min_score,
                                                     knn_k)
        entry = {'num_known': len(embeddings['known']), 'num_unknown': len(embeddings['unknown']),
                 'num_unknown_objects': num_unknown_objects}
        tag = '' if min_score == 0 else f'_s{min_score:g}'
        for name, (known_scores, unknown_scores_) in scores.items():
            threshold, rejected = rejected_at_recall(known_scores, unknown_scores_, RECALL)
            entry[name] = {'auroc': auroc(known_scores, unknown_scores_),
                           'threshold': threshold, 'rejected': rejected}
            summary[f'auroc_{name}{tag}'] = entry[name]['auroc']
            summary[f'rejected95_{name}{tag}'] = rejected
            summary[f'fpr95_{name}{tag}'] = None if rejected is None else 1 - rejected
        entry['radius_rule'] = _radius_rule(bank, embeddings)
        summary[f'boxed_unknown{tag}'] = (entry['num_unknown'] / num_unknown_objects
                                          if num_unknown_objects else None)
        entry['unknown_labelled_as'] = {
            name: float(np.mean(unknown_ids == j)) if len(unknown_ids) else None
            for j, name in enumerate(classes)}
        results['by_min_score'][f'{min_score:g}'] = entry
    at_default = results['by_min_score']['0']['radius_rule'][f'{bank.quantile:g}'] \
        if bank.quantile in RADIUS_QUANTILES else None
    if at_default:
        summary.update(known_rejected_radius=at_default['known_rejected'],
                       unknown_rejected_radius=at_default['unknown_rejected'])
    summary.update({f'unknown_as_{name}': share for name, share in
                    results['by_min_score']['0']['unknown_labelled_as'].items()})
    _, per_class = detections_map(images, classes)
    results.update(map_per_class={k: finite_or_none(v) for k, v in per_class.items()},
                   map_known=_known_map(per_class, known_names), map_known_rejecting={})
    for rule in REJECTION_RULES:
        rejects = rejection_rule(bank, scorer, rule)
        _, rejecting = detections_map(_rejecting(images, rejects), classes)
        results['map_known_rejecting'][rule] = _known_map(rejecting, known_names)
        summary[f'map_known_rejecting_{rule}'] = results['map_known_rejecting'][rule]
    summary['map_known'] = results['map_known']
    results['summary'] = summary
    return results


def format_open_set(results: dict) -> str:
    """The open-set results as a text table: one row per score and minimum detection score."""
    lines = [f"unknown classes {','.join(results['unknown_classes'])}; radii at quantile "
             f"{results['quantile']:g} ({results['center_source']} centers)",
             f"{'score':<12} {'min det score':>13} {'AUROC':>7} {'rejected@95%':>13}"]
    for min_score, entry in results['by_min_score'].items():
        for name in OPEN_SET_SCORES:
            lines.append(f"{name:<12} {min_score:>13} {format_cell(entry[name]['auroc']):>7} "
                         f"{format_cell(entry[name]['rejected']):>13}")
        lines.append(f"  ({entry['num_unknown']} of {entry['num_unknown_objects']} unknown "
                     f"objects boxed, {entry['num_known']} known true positives)")
    for quantile, rule in results['by_min_score']['0']['radius_rule'].items():
        lines.append(f"radius rule, quantile {quantile}: known TPs rejected "
                     f"{format_cell(rule['known_rejected'])}, unknowns rejected "
                     f"{format_cell(rule['unknown_rejected'])}")
    lines.append(f"mAP of the known classes {format_cell(results['map_known'])}; rejecting by "
                 + ', '.join(f"{rule} {format_cell(value)}"
                             for rule, value in results['map_known_rejecting'].items()))
    return '\n'.join(lines)
