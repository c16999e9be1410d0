"""Few-shot registration measured: held-out classes registered from K example boxes, then
detected (``gluon-ssdcl register --evaluate``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..embeddings.class_bank import assign, unknown_scores
from ..utils.arrays import finite_or_none, mean_or_none
from .class_banks import register_class
from .compare import format_cell
from .inference import detections_map

__all__ = ['LABELLINGS', 'example_pool', 'few_shot_evaluation', 'format_few_shot']

LABELLINGS = ('center', 'knn', 'hybrid')


def example_pool(dataset, class_ids: Sequence[int], per_class: int, seed: int = 0
                 ) -> Dict[int, List[Tuple[int, np.ndarray]]]:
    """Up to ``per_class`` ground-truth boxes of each class, from images in a seeded order.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image, label (M, 6))``; labels are read through ``dataset[i]``.
    class_ids : sequence of int
    per_class : int
    seed : int

    Returns
    -------
    dict
        ``{class id: [(image index, (4,) box), ...]}``, at most one box per image and class.
    """
    pool: Dict[int, List[Tuple[int, np.ndarray]]] = {c: [] for c in class_ids}
    for index in np.random.default_rng(seed).permutation(len(dataset)).tolist():
        label = np.asarray(dataset[index][1])
        for c in class_ids:
            rows = label[label[:, 4] == c]
            if len(rows) and len(pool[c]) < per_class:
                pool[c].append((index, rows[0, :4].astype(np.float32)))
        if all(len(v) >= per_class for v in pool.values()):
            break
    return pool


def _relabeller(bank, labelling: str, registered: Sequence[int], knn_k: int):
    """``relabel(image) -> ids`` of one labelling of :data:`LABELLINGS`."""
    def relabel(image):
        if not len(image.ids):
            return image.ids
        if labelling == 'hybrid':  # the class head, unless the nearest center is registered
            nearest, _ = unknown_scores(bank, image.embeddings)
            return np.where(np.isin(nearest, registered), nearest, image.ids)
        return assign(bank, image.embeddings, threshold=None, by=labelling, k=knn_k)
    return relabel


def _map(images, classes, relabel=None):
    if relabel is not None:
        images = [image._replace(ids=np.asarray(relabel(image), np.float32)) for image in images]
    return detections_map(images, classes)[1]


def _mean_of(per_class: Dict[str, float], names: Sequence[str]) -> Optional[float]:
    """The mean AP of the classes ``names`` that have one (not NaN); None for none."""
    return mean_or_none(finite_or_none(per_class[n]) for n in names if n in per_class)


def few_shot_evaluation(model, bank, example_dataset, images, class_ids: Sequence[int],
                        shots: Sequence[int], ctx, draws: int = 3, seed: int = 0,
                        knn_k: int = 5, batch_size: int = 16) -> dict:
    """AP of classes registered from K examples each, and the known classes' AP beside them.

    For each draw and each K of ``shots``: K boxes of each class of ``class_ids`` are drawn
    from ``example_dataset`` (:func:`example_pool`), registered into ``bank``, and the
    validation detections ``images`` are relabelled: ``center`` (nearest center), ``knn``
    (k-NN vote over the gallery) or ``hybrid`` (the class head's label unless the nearest
    center is a registered class). Scores stay the detector's.

    Parameters
    ----------
    model : gluon_ssdcl.engine.checkpoint.LoadedModel
    bank : gluon_ssdcl.embeddings.class_bank.ClassBank
        Of the trained classes (without the ones to register).
    example_dataset : Dataset
        Images holding the classes to register (not the validation images).
    images : list of ImageDetections
        Validation detections with embeddings.
    class_ids : sequence of int
        Ids (in the model's classes) of the classes to register.
    shots : sequence of int
        K values.
    ctx : list of mx.Context
    draws : int
        Independent draws of the examples per K (averaged).
    seed : int
    knn_k, batch_size : int

    Returns
    -------
    dict
        JSON-ready: ``map_known_softmax`` (known classes' mAP with the class head's labels),
        ``map_known_center_base`` (nearest center before registering), and per K and
        labelling the registered classes' AP (``ap_registered``, mean over draws, with
        ``ap_per_class``) and the known classes' mAP (``map_known``); ``summary``: flat numbers.
        An AP that does not exist (a class without validation boxes) is None.
    """
    classes = list(model.classes)
    registered_names = [classes[c] for c in class_ids]
    known = [name for name in classes if name not in registered_names]
    pool = example_pool(example_dataset, class_ids, max(shots) * draws, seed)
    short = [classes[c] for c, boxes in pool.items() if len(boxes) < max(shots)]
    if short:
        raise ValueError(f"the example images hold fewer than {max(shots)} boxes of "
                         f"{', '.join(short)}")
    softmax = _map(images, classes)
    base = _map(images, classes, _relabeller(bank, 'center', [], knn_k))
    results = {'classes': registered_names, 'shots': list(shots), 'draws': draws,
               'map_known_softmax': _mean_of(softmax, known),
               'map_known_center_base': _mean_of(base, known), 'by_shots': {}}
    summary = {'map_known_softmax': results['map_known_softmax'],
               'map_known_center_base': results['map_known_center_base']}
    rng = np.random.default_rng(seed)
    for k in shots:
        runs = {labelling: [] for labelling in LABELLINGS}
        for _ in range(draws):
            registered = bank
            for c in class_ids:
                chosen = rng.choice(len(pool[c]), size=k, replace=False)
                examples = [pool[c][i] for i in chosen]
                registered = register_class(
                    model, registered, classes[c],
                    [example_dataset[index][0] for index, _ in examples],
                    [box[None] for _, box in examples], ctx, batch_size)
            for labelling in LABELLINGS:
                per_class = _map(images, classes,
                                 _relabeller(registered, labelling, list(class_ids), knn_k))
                runs[labelling].append(per_class)
        entry = {}
        for labelling, per_draw in runs.items():
            ap = {name: mean_or_none(finite_or_none(p[name]) for p in per_draw)
                  for name in registered_names}
            entry[labelling] = {
                'ap_per_class': ap,
                'ap_registered': mean_or_none(ap[name] for name in registered_names),
                'map_known': mean_or_none(_mean_of(p, known) for p in per_draw)}
            summary[f'ap_registered_{labelling}_k{k}'] = entry[labelling]['ap_registered']
            summary[f'map_known_{labelling}_k{k}'] = entry[labelling]['map_known']
        results['by_shots'][str(k)] = entry
    results['summary'] = summary
    return results


def format_few_shot(results: dict) -> str:
    """The few-shot results as a text table; a value that does not exist (None) shows as
    "–"."""
    lines = [f"registered {','.join(results['classes'])} ({results['draws']} draws per K); "
             f"known classes' mAP: class head {format_cell(results['map_known_softmax'])}, "
             f"nearest center before registering "
             f"{format_cell(results['map_known_center_base'])}",
             f"{'K':>3} {'labelling':<8} {'AP registered':>14} {'mAP known':>10}"]
    for k, entry in results['by_shots'].items():
        for labelling, values in entry.items():
            lines.append(f"{k:>3} {labelling:<8} {format_cell(values['ap_registered']):>14} "
                         f"{format_cell(values['map_known']):>10}")
    return '\n'.join(lines)
