"""Detect objects in images with a gluon_ssdcl checkpoint and draw them.

Usage::

    python -m gluon_ssdcl.detect --params ssd_center_best.params IMAGE... [-o detections]
        [--thresh 0.5] [--label-by softmax|knn] [--gpus ''] [--knn-k 5] [--gallery-images 200]

writes ``<OUT_DIR>/<image stem>_detections.png`` for each image and prints its path. Each image
is resized to the network's ``base_size`` square and normalised as in validation (GluonCV's
``SSDDefaultValTransform``); boxes are scaled back to the image.

``--label-by knn`` gives each detection the class voted by its k nearest embeddings among the
positive anchors of the first ``--gallery-images`` training images of the checkpoint's data set
(the score stays the class head's). Only checkpoints trained with the center loss have
trained embeddings.

Exit codes: 0; 1 when the checkpoint cannot be used or an image cannot be read (the other
images are still drawn); 2 for bad flags.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import warnings
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from gluoncv.data.transforms import bbox as tbbox

from .checkpoint import build_from_checkpoint
from .cli import _OneLineErrorParser, _positive_int
from .data.check import _check_image, clip_boxes
from .data.datasets import get_dataset, get_val_transform
from .evaluate import (_contexts, _without_trace, collect_positives, knn_predict,
                       positive_loader, sample_gallery)
from .loss import Mode
from .viz import atomic_path, plot_detections

__all__ = ['Detections', 'read_image', 'detect_image', 'build_gallery', 'main']

logger = logging.getLogger(__name__)

GALLERY_BATCH_SIZE = 16
GALLERY_SIZE = 20000  # cap on the gallery's embeddings, as evaluate's --gallery-size default


class Detections(NamedTuple):
    """The kept detections of one image (padding removed), boxes in the image's pixels."""
    ids: np.ndarray  # (K,) class ids
    scores: np.ndarray  # (K,)
    bboxes: np.ndarray  # (K, 4) [xmin, ymin, xmax, ymax]
    embeddings: Optional[np.ndarray]  # (K, D), when the net returns them


def read_image(path: str) -> mx.nd.NDArray:
    """The image at ``path`` as an (H, W, 3) uint8 RGB NDArray.

    Raises
    ------
    ValueError
        Naming the file, when it is missing or cannot be decoded completely (a truncated JPEG
        is refused, where OpenCV alone would fill it with grey).
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such image file")
    _, problem = _check_image(path)
    if problem:
        raise ValueError(f"{path}: {problem}")
    try:
        return mx.image.imread(path)
    except mx.base.MXNetError as err:
        raise ValueError(f"{path}: image cannot be decoded "
                         f"({_without_trace(str(err)).strip()})") from err


def detect_image(net, img: mx.nd.NDArray, ctx: Sequence[mx.Context]) -> Detections:
    """Run ``net`` on one image resized to ``net.base_size``; boxes scaled back and clipped.

    Parameters
    ----------
    net : SSDCenter
        In inference; with embeddings switched on (``net.set_embeddings(infer=True)``) the
        result carries them.
    img : NDArray, (H, W, 3) uint8
    ctx : list of mx.Context
        The image runs on the first.

    Returns
    -------
    Detections
        Rows with class id >= 0, in the net's order (by score).
    """
    height, width = img.shape[:2]
    size = net.base_size
    x, _ = get_val_transform(size, size)(img, np.zeros((0, 4)))
    outputs = [o[0].asnumpy() for o in net(x.expand_dims(0).as_in_context(ctx[0]))]
    kept = outputs[0][:, 0] >= 0
    bboxes = tbbox.resize(outputs[2][kept], in_size=(size, size), out_size=(width, height))
    return Detections(outputs[0][kept, 0].astype(np.int64), outputs[1][kept, 0],
                      clip_boxes(bboxes, width, height),
                      outputs[3][kept] if len(outputs) > 3 else None)


def build_gallery(net, meta: dict, ctx: Sequence[mx.Context], num_images: int,
                  max_size: int = GALLERY_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of the positive anchors of the first training images.

    Parameters
    ----------
    net : SSDCenter
    meta : dict
        Checkpoint metadata: ``dataset``, ``dataset_root``, ``classes`` and ``seed``.
    ctx : list of mx.Context
    num_images : int
        Training images to use, from the first.
    max_size : int
        Cap on the embeddings, sampled by :func:`gluon_ssdcl.evaluate.sample_gallery`.

    Returns
    -------
    embeddings : numpy.ndarray, (G, D)
    labels : numpy.ndarray of int64, (G,)
        0-based class ids.
    """
    dataset = meta['dataset']
    train_dataset, _ = get_dataset(dataset, meta.get('dataset_root'), skip_bad=True,
                                   classes=meta['classes'] if dataset == 'custom' else None)
    loader = positive_loader(train_dataset.take(num_images), net, GALLERY_BATCH_SIZE)
    embeddings, labels, _ = collect_positives(net, loader, ctx)
    embeddings, labels = sample_gallery(embeddings, labels, max_size, meta.get('seed', 0))
    if not len(embeddings):
        raise ValueError(f"the first {num_images} training images have no positive anchors: "
                         "no KNN gallery")
    return embeddings, labels


def _knn_relabeller(net, meta: dict, ctx: Sequence[mx.Context], num_images: int,
                    k: int) -> Callable[[np.ndarray], np.ndarray]:
    """``relabel(embeddings (K, D)) -> class ids (K,)`` by KNN over :func:`build_gallery`."""
    mode = meta.get('mode')
    if mode is None or not Mode(mode).uses_center:
        raise ValueError(f"--label-by knn needs a checkpoint trained with the center loss; this "
                         f"one was trained in {mode or 'an unrecorded'} mode, so its embeddings "
                         "were never trained")
    if 'dataset' not in meta:
        raise ValueError("--label-by knn needs the training data set, which the checkpoint "
                         "does not record")
    gallery, labels = build_gallery(net, meta, ctx, num_images)
    if k > len(gallery):
        logger.warning("--knn-k %d is more than the %d gallery embeddings; using k=%d",
                       k, len(gallery), len(gallery))
    logger.info("KNN gallery: %d embeddings from %d training images", len(gallery), num_images)
    return functools.partial(knn_predict, gallery, labels, k=min(k, len(gallery)))


def _load(args: argparse.Namespace) -> Tuple[object, List[str],
                                             Optional[Callable[[np.ndarray], np.ndarray]]]:
    """The hybridized net, its class names and the KNN relabeller (None for softmax labels)."""
    try:
        net, _, checkpoint = build_from_checkpoint(args.params, args.gpus)
    except KeyError as err:
        raise ValueError(f"{args.params} lacks {err} in its metadata") from err
    meta = checkpoint.meta
    if args.network and args.network != meta['network']:
        raise ValueError(f"--network {args.network} differs from the checkpoint's network "
                         f"{meta['network']} (omit --network to use it)")
    relabel = None
    if args.label_by == 'knn':
        relabel = _knn_relabeller(net, meta, args.gpus, args.gallery_images, args.knn_k)
        net.set_embeddings(infer=True)
    net.hybridize()
    return net, meta['classes'], relabel


def _output_path(out_dir: str, image_path: str) -> str:
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return os.path.join(out_dir, f'{stem}_detections.png')


def _threshold(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a score between 0 and 1, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog='python -m gluon_ssdcl.detect',
        description='Detect objects in images with a gluon_ssdcl checkpoint; writes '
                    '<OUT_DIR>/<image stem>_detections.png per image.')
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files')
    parser.add_argument('--params', required=True, help='checkpoint file (.params)')
    parser.add_argument('--network', help="model name; must be the checkpoint's (default)")
    parser.add_argument('-o', '--output-dir', default='detections',
                        help='folder of the drawings (default: detections)')
    parser.add_argument('--thresh', type=_threshold, default=0.5,
                        help='draw detections scoring at least this (default: 0.5)')
    parser.add_argument('--label-by', choices=('softmax', 'knn'), default='softmax',
                        help='class of a detection: the class head (default) or a KNN vote '
                             'of training embeddings (center-loss checkpoints)')
    parser.add_argument('--gpus', type=_contexts, default='',
                        help="GPU ids such as '0,1' (the first is used); empty for the CPU")
    parser.add_argument('--knn-k', type=_positive_int, default=5,
                        help='neighbours of the KNN vote (default: 5)')
    parser.add_argument('--gallery-images', type=_positive_int, default=200,
                        help='training images whose embeddings form the KNN gallery '
                             '(default: 200)')
    return parser


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    outputs = [_output_path(args.output_dir, path) for path in args.images]
    clashes = sorted({path for path in outputs if outputs.count(path) > 1})
    if clashes:
        parser.error(f"several images would be drawn to {', '.join(clashes)}: give images "
                     "distinct file names")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: draw the detections of each image; see the module docstring.

    Returns 0, or 1 after one ``error: ...`` line on stderr per problem (an unusable
    checkpoint stops at once; an unreadable image is skipped). Bad flags exit with 2.
    """
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    # without --label-by knn the hybridized graph leaves the embedding head out, on purpose
    warnings.filterwarnings('ignore', message=r'Parameter .* is not used by any computation')
    try:
        net, classes, relabel = _load(args)
    except (OSError, ValueError, mx.base.MXNetError) as err:
        print(f'error: {_without_trace(str(err))}', file=sys.stderr)
        return 1
    failed = 0
    for path in args.images:
        try:
            img = read_image(path)
        except ValueError as err:
            print(f'error: {err}', file=sys.stderr)
            failed += 1
            continue
        found = detect_image(net, img, args.gpus)
        ids = relabel(found.embeddings) if relabel is not None and len(found.ids) else found.ids
        fig = plot_detections(img, found.bboxes, found.scores, ids, classes, args.thresh)
        output = _output_path(args.output_dir, path)
        with atomic_path(output) as tmp:
            fig.savefig(tmp, format='png', bbox_inches='tight')
        logger.info("%s: %d detections scoring >= %g", path,
                    int(np.sum(found.scores >= args.thresh)), args.thresh)
        print(output)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
