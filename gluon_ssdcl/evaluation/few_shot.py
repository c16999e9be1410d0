"""Few-shot registration measured: held-out classes registered from K example boxes, then
detected (``gluon-ssdcl register --evaluate``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from ..embeddings.class_bank import assign, unknown_scores
from ..engine.head_tuning import fine_tune_rows, initial_rows
from ..utils.arrays import finite_or_none, mean_or_none
from .class_banks import embed_anchors, register_class
from .compare import format_cell
from .inference import anchor_cache, cached_detections, detections_map

__all__ = ['LABELLINGS', 'example_pool', 'fine_tuned_head', 'few_shot_evaluation',
           'format_few_shot']

LABELLINGS = ('center', 'knn', 'hybrid')  # relabelling the detections
HEAD_LABELLINGS = ('imprint', 'finetune')  # a new class head: the detector runs again


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


def fine_tuned_head(net, bank, class_ids: Sequence[int], images: Sequence, boxes: Sequence,
                    ctx, batch_size: int = 16, steps: int = 50) -> Tuple[np.ndarray, np.ndarray]:
    """The class head with the rows of registered classes fine-tuned (TFA-style), the others
    unchanged.

    Each registered class's row starts from its center (:func:`initial_rows`: its direction,
    scaled to the trained rows' norm, as weight imprinting does); then only those rows train
    (:func:`fine_tune_rows`, ``steps`` steps; 0: the imprinted rows as they are) on the bank's
    gallery (the registered examples' positive anchors and the replayed training positives,
    each with its class) and the background anchors of the example images (matched against
    every box of those images).

    Parameters
    ----------
    net : SSDCenter
    bank : ClassBank
        With the classes of ``class_ids`` registered (:func:`register_class`).
    class_ids : sequence of int
        The registered model classes (their head rows are ``id + 1``).
    images : sequence of (H, W, 3) uint8 arrays
        The example images.
    boxes : sequence of (M, 4) arrays
        Every ground-truth box of each example image.
    ctx : list of mx.Context
    batch_size : int

    Returns
    -------
    (weight (C + 1, D), bias (C + 1,)) : numpy.ndarray of float64
    """
    dense = net.class_head[0]
    weight, bias = dense.weight.data().asnumpy(), dense.bias.data().asnumpy()
    rows = [c + 1 for c in class_ids]
    trained = [j + 1 for j in np.flatnonzero(bank.active[:len(weight) - 1])
               if j not in class_ids]
    weight, bias = initial_rows(weight, bias, rows, bank.centers[list(class_ids)], trained)
    if not steps:
        return weight, bias
    anchors, targets = embed_anchors(net, images, boxes, ctx, batch_size)
    background = anchors[targets == 0]
    embeddings = np.concatenate([bank.gallery, background])
    labels = np.concatenate([bank.gallery_labels + 1, np.zeros(len(background), np.int64)])
    return fine_tune_rows(weight, bias, rows, embeddings, labels, steps=steps, ctx=ctx[0])


def _head_map(model, head, cache):
    """Per-class AP of the detector with the class head ``(weight, bias)`` over an
    :func:`~gluon_ssdcl.evaluation.inference.anchor_cache`; the net's own head is restored
    afterwards."""
    dense = model.net.class_head[0]
    saved = dense.weight.data().copy(), dense.bias.data().copy()
    try:
        dense.weight.set_data(mx.nd.array(head[0]))
        dense.bias.set_data(mx.nd.array(head[1]))
        return _map(cached_detections(model.net, cache), model.classes)
    finally:
        dense.weight.set_data(saved[0])
        dense.bias.set_data(saved[1])


def _map(images, classes, relabel=None):
    if relabel is not None:
        images = [image._replace(ids=np.asarray(relabel(image), np.float32)) for image in images]
    return detections_map(images, classes)[1]


def _mean_of(per_class: Dict[str, float], names: Sequence[str]) -> Optional[float]:
    """The mean AP of the classes ``names`` that have one (not NaN); None for none."""
    return mean_or_none(finite_or_none(per_class[n]) for n in names if n in per_class)


def few_shot_evaluation(model, bank, example_dataset, images, class_ids: Sequence[int],
                        shots: Sequence[int], ctx, draws: int = 3, seed: int = 0,
                        knn_k: int = 5, batch_size: int = 16, val_dataset=None) -> dict:
    """AP of classes registered from K examples each, and the known classes' AP beside them.

    For each draw and each K of ``shots``: K boxes of each class of ``class_ids`` are drawn
    from ``example_dataset`` (:func:`example_pool`), registered into ``bank``, and the
    validation detections ``images`` are relabelled: ``center`` (nearest center), ``knn``
    (k-NN vote over the gallery) or ``hybrid`` (the class head's label unless the nearest
    center is a registered class). Scores stay the detector's. With ``val_dataset`` (the
    images of ``images``), also a new class head, with which the detector runs again (new
    scores, new detections; the backbone's outputs are computed once): ``imprint``, the
    registered classes' rows set from their centers, and ``finetune``, those rows then
    fine-tuned on the examples (:func:`fine_tuned_head`).

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
    val_dataset : Dataset, optional
        The validation images, to measure ``imprint`` and ``finetune``.

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
    labellings = LABELLINGS + (HEAD_LABELLINGS if val_dataset is not None else ())
    cache = (anchor_cache(model.net, val_dataset, ctx, batch_size)
             if val_dataset is not None else None)
    for k in shots:
        runs = {labelling: [] for labelling in labellings}
        for _ in range(draws):
            registered, examples = bank, []
            for c in class_ids:
                chosen = rng.choice(len(pool[c]), size=k, replace=False)
                drawn = [pool[c][i] for i in chosen]
                examples += [index for index, _ in drawn]
                registered = register_class(
                    model, registered, classes[c],
                    [example_dataset[index][0] for index, _ in drawn],
                    [box[None] for _, box in drawn], ctx, batch_size)
            for labelling in LABELLINGS:
                per_class = _map(images, classes,
                                 _relabeller(registered, labelling, list(class_ids), knn_k))
                runs[labelling].append(per_class)
            if cache is not None:
                items = [example_dataset[index] for index in sorted(set(examples))]
                for labelling, steps in zip(HEAD_LABELLINGS, (0, 50)):
                    head = fine_tuned_head(model.net, registered, class_ids,
                                           [image for image, _ in items],
                                           [np.asarray(label)[:, :4] for _, label in items],
                                           ctx, batch_size, steps)
                    runs[labelling].append(_head_map(model, head, cache))
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
