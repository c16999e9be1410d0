"""Detect objects in images with a gluon_ssdcl checkpoint and draw them.

Usage::

    gluon-ssdcl detect --params runs/<run>_best.params IMAGE... [-o detections]
        [--thresh 0.5] [--label-by softmax|knn|center] [--reject-unknown [--score NAME]]
        [--gpus '']
        [--knn-k 5] [--gallery-images 200]

writes ``<OUT_DIR>/<image stem>_detections.png`` for each image and prints its path. Each image
is resized to the network's ``base_size`` square and normalised as in validation (GluonCV's
``SSDDefaultValTransform``); boxes are scaled back to the image.

``--label-by knn`` gives each detection the class voted by its k nearest embeddings among the
positive anchors of the first ``--gallery-images`` training images of the checkpoint's data set
(the score stays the class head's). Only checkpoints trained with the center loss have
trained embeddings.

When the checkpoint has a class bank beside it (``<stem>.openset.npz``, written by
``gluon-ssdcl register`` or ``evaluate --open-set``), ``--label-by center|knn`` use
it, registered classes included: the nearest center, or the k-NN vote over its gallery.
``--reject-unknown`` labels a detection "unknown" (drawn in grey), whatever the labelling, by
``--score``: beyond its nearest center's radius (``center``, the default), or with an
``energy``, ``cosine``, ``mahalanobis`` or ``gaussian`` score above the one of 95% of the
training positives (the bank's quantile; :mod:`gluon_ssdcl.embeddings.scores`). The bank is fitted on
``--gallery-images`` training images when there is none (see
:mod:`gluon_ssdcl.embeddings.class_bank`). A damaged class bank (truncated,
or with NaN centers or radii) is refused in one line naming it.

The model, its classes and its data set are read from the checkpoint. Exit codes: 0; 1 when
the checkpoint or its class bank cannot be used, or an image cannot be read (the other images
are still drawn); 2 for bad flags.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from ..deploy.detect import (GALLERY_BATCH_SIZE, GALLERY_SIZE, detect_image, read_image,
                             training_gallery)
from ..embeddings.class_bank import UNKNOWN_NAME, assign, bank_path
from ..embeddings.knn import knn_classifier
from ..embeddings.scores import REJECTION_RULES, rejection_rule
from ..engine.checkpoint import load_model
from ..evaluation.class_banks import bank_scores, checkpoint_bank
from ..losses.multibox import Mode
from ..utils.files import atomic_path
from ..viz import plot_detections
from .common import (CommandError, OneLineErrorParser, add_checkpoint_flag, add_gpus_flag,
                     add_knn_flag, checkpoint_path, contexts, number, output_folder, positive_int,
                     program, run)

__all__ = ['build_parser', 'main']

logger = logging.getLogger(__name__)

UNKNOWN_COLOR = (0.55, 0.55, 0.55)  # grey boxes of unknown detections


def _knn_relabeller(net, meta: dict, ctx: Sequence[mx.Context], num_images: int,
                    k: int) -> Callable[[np.ndarray], np.ndarray]:
    """``relabel(embeddings (K, D)) -> class ids (K,)`` by k-NN over :func:`training_gallery`."""
    mode = meta['mode']
    if not Mode(mode).uses_center:
        raise CommandError(f"--label-by knn needs a checkpoint trained with the center loss; "
                           f"this one was trained in {mode} mode, so its embeddings were never "
                           "trained")
    gallery, labels = training_gallery(net, meta, ctx, num_images)
    logger.info("k-NN gallery: %d embeddings from %d training images", len(gallery), num_images)
    return knn_classifier(gallery, labels, k)


def _bank_relabeller(model, args: argparse.Namespace, ctx: Sequence[mx.Context]
                     ) -> Tuple[List[str], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """The class names (the bank's, then "unknown") and ``relabel(ids, embeddings)`` with the
    checkpoint's class bank."""
    if not Mode(model.checkpoint.meta['mode']).uses_center:
        logger.info("%s was trained in softmax mode: the class bank uses the class means of "
                    "its training embeddings", model.checkpoint.path)
    bank = checkpoint_bank(model, ctx, GALLERY_BATCH_SIZE, GALLERY_SIZE,
                           max_images=args.gallery_images)
    names = list(bank.classes) + [UNKNOWN_NAME]
    rejects = (rejection_rule(bank, None if args.score == 'center' else
                              bank_scores(model.net, bank), args.score)
               if args.reject_unknown else None)

    def relabel(ids: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        labels = ids if args.label_by == 'softmax' else assign(
            bank, embeddings, None, by=args.label_by, k=args.knn_k)
        if rejects is not None:
            labels = np.where(rejects(embeddings), len(names) - 1, labels)
        return labels
    return names, relabel


def _load(args: argparse.Namespace, ctx: Sequence[mx.Context]
          ) -> Tuple[object, List[str], Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]]]:
    """The hybridized net, the class names and ``relabel(ids, embeddings) -> ids`` (None for
    the class head's labels)."""
    model = load_model(args.params, ctx)
    net, meta = model.net, model.checkpoint.meta
    names, relabel = meta['classes'], None
    has_bank = os.path.isfile(bank_path(model.checkpoint.path))
    if args.reject_unknown or args.label_by == 'center' or (args.label_by == 'knn' and has_bank):
        names, relabel = _bank_relabeller(model, args, ctx)
        net.set_embeddings(infer=True)
    elif args.label_by == 'knn':
        knn = _knn_relabeller(net, meta, ctx, args.gallery_images, args.knn_k)
        relabel = lambda ids, embeddings: knn(embeddings)  # noqa: E731
        net.set_embeddings(infer=True)
    net.hybridize()
    return net, names, relabel


def _output_path(out_dir: str, image_path: str) -> str:
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return os.path.join(out_dir, f'{stem}_detections.png')


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog='gluon-ssdcl detect',
        description='Detect objects in images with a gluon_ssdcl checkpoint; writes '
                    '<OUT_DIR>/<image stem>_detections.png per image.')
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files')
    add_checkpoint_flag(parser)
    parser.add_argument('-o', '--output-dir', type=output_folder, default='detections',
                        help='folder of the drawings (default: detections)')
    parser.add_argument('--thresh', type=number(0, 1), default=0.5,
                        help='draw detections scoring at least this (default: 0.5)')
    parser.add_argument('--label-by', choices=('softmax', 'knn', 'center'), default='softmax',
                        help='class of a detection: the class head (softmax), a KNN vote of '
                             'training embeddings (center-loss checkpoints) or the nearest '
                             'center; knn and center use the class bank beside the checkpoint '
                             '(registered classes) when there is one (default: softmax)')
    parser.add_argument('--reject-unknown', action='store_true',
                        help="label detections 'unknown' by --score, drawn in grey "
                             "(default: off)")
    parser.add_argument('--score', choices=REJECTION_RULES, default=None,
                        help="the rule of --reject-unknown: beyond the nearest center's "
                             "radius (center), or an open-set score above the one of 95%% of "
                             "the training positives (default: center)")
    add_gpus_flag(parser)
    add_knn_flag(parser)
    parser.add_argument('--gallery-images', type=positive_int, default=200,
                        help='training images whose embeddings form the KNN gallery '
                             '(default: 200)')
    return parser


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.score is not None and not args.reject_unknown:
        parser.error("--score is the rule of --reject-unknown")
    args.score = args.score or 'center'
    outputs = [_output_path(args.output_dir, path) for path in args.images]
    clashes = sorted({path for path in outputs if outputs.count(path) > 1})
    if clashes:
        parser.error(f"several images would be drawn to {', '.join(clashes)}: give images "
                     "distinct file names")
    return args


def _draw(net, classes: Sequence[str], relabel, path: str, args: argparse.Namespace,
          ctx: Sequence[mx.Context]) -> str:
    """Detect objects in the image at ``path`` and draw them; returns the drawing's path."""
    img = read_image(path)
    found = detect_image(net, img, ctx)
    ids = relabel(found.ids, found.embeddings) if relabel is not None and len(found.ids) \
        else found.ids
    unknown = {'colors': {len(classes) - 1: UNKNOWN_COLOR}} if classes[-1:] == [UNKNOWN_NAME] \
        else {}
    fig = plot_detections(img, found.bboxes, found.scores, ids, classes, args.thresh, **unknown)
    output = _output_path(args.output_dir, path)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format='png', bbox_inches='tight')
    logger.info("%s: %d detections scoring >= %g", path,
                int(np.sum(found.scores >= args.thresh)), args.thresh)
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: draw the detections of each image; see the module docstring.

    Returns 0, or 1 after one ``error: ...`` line on stderr per problem (an unusable
    checkpoint stops at once; an unreadable image is skipped). Bad flags exit with 2.
    """
    args = _parse_args(argv)

    def detect() -> int:
        args.params = checkpoint_path(args)
        ctx = contexts(args.gpus)
        net, classes, relabel = _load(args, ctx)
        failed = 0
        with warnings.catch_warnings():
            # without --label-by knn the hybridized graph leaves the embedding head out
            warnings.filterwarnings('ignore',
                                    message=r'Parameter .* is not used by any computation')
            for path in args.images:
                try:
                    print(_draw(net, classes, relabel, path, args, ctx))
                except ValueError as err:
                    print(f'error: {err}', file=sys.stderr)
                    failed += 1
        return 1 if failed else 0
    return run(detect)


if __name__ == '__main__':
    program(main)
