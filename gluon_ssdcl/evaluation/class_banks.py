"""Class banks of a trained model: fitted from its training data, kept beside its checkpoint, and
new classes registered from a few example boxes (the bank itself:
:mod:`gluon_ssdcl.embeddings.class_bank`).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np

from ..embeddings.class_bank import (DEFAULT_QUANTILE, ClassBank, bank_path, check_bank,
                                     class_radii, load_bank, make_bank, registration_index,
                                     save_bank, with_class)
from ..embeddings.scores import ScoreModel, fit_scores
from ..utils.files import file_sha256

__all__ = ['fit_bank', 'checkpoint_bank', 'bank_scores', 'embed_anchors', 'embed_boxes',
           'register_class']


def fit_bank(model, train_dataset, ctx, batch_size: int = 16, gallery_size: int = 20000,
             quantile: float = DEFAULT_QUANTILE, seed: int = 0, num_workers: int = 0,
             max_batches: Optional[int] = None) -> ClassBank:
    """The bank of a loaded model's classes from its training images' positive anchors.

    Parameters
    ----------
    model : gluon_ssdcl.engine.checkpoint.LoadedModel
        Its learned centers are used unless it was trained in softmax mode (class means then).
    train_dataset : Dataset
        Items ``(image (H, W, 3) uint8, label (M, 6))``.
    ctx : list of mx.Context
    batch_size, num_workers : int
        Loader settings.
    gallery_size : int
        Cap on the training positives read
        (:func:`~gluon_ssdcl.evaluation.inference.build_gallery`); they give the class means,
        the radii and the k-NN gallery.
    quantile : float
        Of the radii.
    seed : int
        Order in which the training images are read.
    max_batches : int, optional
        Read only this many batches.

    Raises
    ------
    ValueError
        Naming the checkpoint, when its embeddings give no usable bank (:func:`check_bank`:
        NaN weights, no training positives).
    """
    from ..losses.multibox import Mode  # pylint: disable=import-outside-toplevel
    from .inference import build_gallery  # pylint: disable=import-outside-toplevel
    embeddings, labels = build_gallery(model.net, train_dataset, ctx, batch_size, gallery_size,
                                       seed, num_workers, max_batches=max_batches)
    learned = Mode(model.checkpoint.meta['mode']).uses_center
    path = model.checkpoint.path
    try:
        bank = make_bank(model.classes, embeddings, labels,
                         model.centers.asnumpy() if learned else None, quantile,
                         file_sha256(path))
        check_bank(bank)
    except ValueError as err:
        raise ValueError(f"{path}: its training images give no usable class bank: {err}") \
            from err
    return bank


def checkpoint_bank(model, ctx, batch_size: int = 16, gallery_size: int = 20000,
                    quantile: float = DEFAULT_QUANTILE, num_workers: int = 0,
                    max_images: Optional[int] = None, save: bool = True,
                    registered: bool = True) -> ClassBank:
    """The bank saved beside a loaded model's checkpoint, or one fitted from the checkpoint's
    training data (:func:`fit_bank`, the training images' positives) and saved there.

    Parameters
    ----------
    model : gluon_ssdcl.engine.checkpoint.LoadedModel
    ctx : list of mx.Context
    batch_size, gallery_size, quantile, num_workers
        As in :func:`fit_bank`, when it is fitted.
    max_images : int, optional
        Fit on the first training images only (a quick look; such a bank is never saved).
    save : bool
        Write a fitted bank to :func:`bank_path` when none is there.
    registered : bool
        False: a bank with registered classes is not used; the trained classes' bank is fitted
        again (and not saved, to keep the registrations).

    Raises
    ------
    ValueError
        For a saved bank of other weights, or training data without positives.
    """
    from ..data.datasets import get_dataset  # pylint: disable=import-outside-toplevel
    path = bank_path(model.checkpoint.path)
    sha = file_sha256(model.checkpoint.path)
    if os.path.isfile(path):
        bank = load_bank(path, sha)
        if registered or not bank.registered:
            if bank.quantile != quantile:
                bank = bank._replace(radii=_requantiled(bank, quantile), quantile=quantile)
            return bank
        save = False
    meta = model.checkpoint.meta
    train_dataset, _ = get_dataset(meta['dataset'], meta.get('dataset_root'), skip_bad=True,
                                   classes=meta['classes'] if meta['dataset'] == 'custom'
                                   else None)
    if max_images is not None:
        train_dataset, save = train_dataset.take(max_images), False
    bank = fit_bank(model, train_dataset, ctx, batch_size, gallery_size, quantile,
                    meta.get('seed', 0), num_workers)
    if save:
        save_bank(bank, path)
    return bank


def bank_scores(net, bank: ClassBank) -> ScoreModel:
    """The post-hoc open-set scores of ``bank`` with ``net``'s class head
    (:func:`~gluon_ssdcl.embeddings.scores.fit_scores`)."""
    dense = net.class_head[0]
    return fit_scores(bank, dense.weight.data().asnumpy(), dense.bias.data().asnumpy())


def _requantiled(bank: ClassBank, quantile: float) -> np.ndarray:
    """The bank's radii at another quantile: trained classes' from the training part of the
    gallery; registered classes keep the rule of :func:`with_class`."""
    registered = [bank.classes.index(name) for name in bank.registered]
    trained = ~np.isin(bank.gallery_labels, registered)
    radii = class_radii(bank.gallery[trained], bank.gallery_labels[trained],
                        bank.centers[:len(bank.classes)], quantile)
    if registered:
        radii[registered] = np.nanmedian(radii)
    return radii


def embed_anchors(net, images: Sequence, boxes: Sequence, ctx, batch_size: int = 16
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Every anchor's embedding and training class target on images with given boxes, as in
    training (:func:`~gluon_ssdcl.evaluation.inference.positive_loader`, no augmentation).

    Parameters
    ----------
    net : SSDCenter
    images : sequence of numpy.ndarray or NDArray
        ``(H, W, 3)`` uint8 RGB images.
    boxes : sequence of array-like
        Per image, ``(M, 4)`` ``[xmin, ymin, xmax, ymax]`` in that image's pixels.
    ctx : list of mx.Context
    batch_size : int

    Returns
    -------
    embeddings : numpy.ndarray of float32, (A, D)
        The anchors of every image, image after image.
    targets : numpy.ndarray of int64, (A,)
        1 for an anchor matched to a box, 0 for background, -1 for ignored.
    """
    import mxnet as mx  # pylint: disable=import-outside-toplevel
    from mxnet.gluon.data import SimpleDataset  # pylint: disable=import-outside-toplevel

    from .inference import positive_loader  # pylint: disable=import-outside-toplevel
    if len(images) != len(boxes):
        raise ValueError(f"{len(images)} images but {len(boxes)} box lists")
    items = []
    for image, image_boxes in zip(images, boxes):
        image_boxes = np.asarray(image_boxes, dtype=np.float32).reshape(-1, 4)
        label = np.hstack([image_boxes, np.zeros((len(image_boxes), 2), np.float32)])
        image = image if isinstance(image, mx.nd.NDArray) else mx.nd.array(image, dtype='uint8')
        items.append((image, label))
    embeddings, targets = [np.zeros((0, net.embed_dim), np.float32)], [np.zeros(0, np.int64)]
    if items:
        with mx.autograd.predict_mode():
            for batch in positive_loader(SimpleDataset(items), net, batch_size):
                outputs = net.anchor_outputs(batch[0].as_in_context(ctx[0]))
                embeddings.append(outputs[3].asnumpy().reshape(-1, net.embed_dim))
                targets.append(batch[1].asnumpy().reshape(-1).astype(np.int64))
    return np.concatenate(embeddings).astype(np.float32), np.concatenate(targets)


def embed_boxes(net, images: Sequence, boxes: Sequence, ctx, batch_size: int = 16
                ) -> np.ndarray:
    """(P, D) float32 embeddings of the positive anchors matched to given boxes, as in training
    (the anchors of :func:`embed_anchors` with target 1)."""
    embeddings, targets = embed_anchors(net, images, boxes, ctx, batch_size)
    return embeddings[targets > 0]


def register_class(model, bank: ClassBank, name: str, images: Sequence, boxes: Sequence,
                   ctx, batch_size: int = 16, replace: bool = False) -> ClassBank:
    """Register class ``name`` from a few example boxes, without retraining.

    Embeds the boxes (:func:`embed_boxes`) and adds their mean as the class's center and the
    embeddings to the k-NN gallery (:func:`with_class`).

    Parameters
    ----------
    model : gluon_ssdcl.engine.checkpoint.LoadedModel
    bank : ClassBank
        Of that model (:func:`fit_bank` or :func:`load_bank`).
    name : str
    images : sequence of numpy.ndarray or NDArray
        ``(H, W, 3)`` uint8 RGB.
    boxes : sequence of array-like
        ``(M, 4)`` boxes per image, in its pixels.
    ctx : list of mx.Context
    batch_size : int
    replace : bool
        Whether a registered class ``name`` may be replaced.

    Returns
    -------
    ClassBank
        The new bank (save it with :func:`save_bank`).

    Raises
    ------
    ValueError
        As :func:`with_class`.
    """
    registration_index(bank, name, replace)  # refuse before embedding
    embeddings = embed_boxes(model.net, images, boxes, ctx, batch_size)
    return with_class(bank, name, embeddings, sum(len(np.reshape(b, (-1, 4))) for b in boxes),
                      replace)
