"""New classes from a few examples, without retraining: ``gluon-ssdcl register``.

Registering a class embeds its example boxes with a trained model (the positive anchors matched
to each box, as in training), adds their mean as the class's center and the embeddings to the
k-NN gallery (:func:`gluon_ssdcl.evaluation.class_banks.register_class`), and saves the class
bank beside the checkpoint (``<stem>.openset.npz``, written all or nothing). From then on
nearest-center and k-NN labelling (``detect --reject-unknown``, ``export``) know the class::

    gluon-ssdcl register --params runs/<run> --name seven IMG.jpg:12,30,40,80 ...

Each example is ``IMAGE:xmin,ymin,xmax,ymax`` in the image's pixels (several boxes of one
image: repeat the image). A name registered already is refused unless ``--replace`` (then its
center and gallery embeddings are replaced).

``--evaluate --classes 8,9 --shots 1,5,20`` measures instead, on a digits model trained without
those classes (``gluon-ssdcl train --digits-exclude 8,9``), how well classes registered from K
examples are detected (:func:`~gluon_ssdcl.evaluation.few_shot.few_shot_evaluation`); an AP
that does not exist (few images) is written as null. With ``--fine-tune`` it also measures
registration in the class head, the detector running again with the new head: the rows of the
registered classes set from their centers (``imprint``), and those rows then fine-tuned on the
examples (``finetune``: with replayed training positives and the examples' background
anchors), the other rows unchanged.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from ..data.datasets import get_dataset
from ..data.digitset import ensure_digits
from ..data.voc_check import check_image
from ..embeddings.class_bank import bank_path, save_bank
from ..engine.checkpoint import load_model
from ..evaluation.class_banks import checkpoint_bank, register_class
from ..evaluation.compare import save_results
from ..evaluation.few_shot import few_shot_evaluation, format_few_shot
from ..evaluation.inference import validation_detections
from .common import (CommandError, OneLineErrorParser, add_checkpoint_flag, add_gpus_flag,
                     add_knn_flag, add_loader_flags, checkpoint_path, classes_flag, contexts,
                     positive_int, program, run)

__all__ = ['build_parser', 'main']

logger = logging.getLogger(__name__)


def parse_example(text: str) -> Tuple[str, np.ndarray]:
    """``IMAGE:xmin,ymin,xmax,ymax`` -> (image path, (4,) float32 box).

    Raises
    ------
    ValueError
        Naming the text, for a missing or malformed box.
    """
    path, sep, box = text.rpartition(':')
    try:
        values = np.array([float(v) for v in box.split(',')], np.float32)
    except ValueError:
        values = np.zeros(0)
    if not sep or not path or values.shape != (4,) or not (values[2:] > values[:2]).all():
        raise ValueError(f"example {text!r} is not IMAGE:xmin,ymin,xmax,ymax with xmin < xmax "
                         "and ymin < ymax")
    return path, values


def _read_examples(examples: Sequence[str]) -> Tuple[List[mx.nd.NDArray], List[np.ndarray]]:
    """The images and, per image, its boxes of ``IMAGE:box`` examples (one image read once)."""
    boxes: Dict[str, List[np.ndarray]] = {}
    for text in examples:
        path, box = parse_example(text)
        boxes.setdefault(path, []).append(box)
    images = []
    for path, image_boxes in boxes.items():
        size, problem = check_image(path)
        if problem:
            raise ValueError(f"{path}: {problem}")
        image = mx.image.imread(path)
        width, height = size
        outside = [b for b in image_boxes if b[2] > width or b[3] > height or (b < 0).any()]
        if outside:
            raise ValueError(f"{path}: box {','.join(f'{v:g}' for v in outside[0])} is outside "
                             f"the {width}x{height} image")
        images.append(image)
    return images, [np.stack(b) for b in boxes.values()]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog='gluon-ssdcl register',
        description='Register a new class from a few example boxes, without retraining (or '
                    'measure few-shot registration with --evaluate).')
    add_checkpoint_flag(parser)
    parser.add_argument('examples', nargs='*', metavar='IMAGE:xmin,ymin,xmax,ymax',
                        help='example boxes of the new class')
    parser.add_argument('--name', help='name of the new class (required to register; default: '
                                       'none)')
    parser.add_argument('--replace', action='store_true',
                        help='replace the class --name when it is registered already (default: '
                             'off, refused)')
    parser.add_argument('--evaluate', action='store_true',
                        help='measure few-shot registration of --classes on a digits model '
                             'trained without them (default: off, register --name)')
    parser.add_argument('--classes', type=classes_flag,
                        help='--evaluate: the held-out digit classes to register, e.g. 8,9 '
                             '(required with --evaluate; default: none)')
    parser.add_argument('--shots', type=_shots, default=[1, 5, 20],
                        help='--evaluate: examples per class (default: 1,5,20)')
    parser.add_argument('--draws', type=positive_int, default=3,
                        help='--evaluate: draws of the examples per K (default: 3)')
    parser.add_argument('--fine-tune', action='store_true',
                        help="--evaluate: also give the registered classes rows of the class "
                             "head, set from their centers and then fine-tuned on the "
                             "examples, and detect again (default: off)")
    parser.add_argument('--examples-root', default=None,
                        help="--evaluate: folder of the digits set the examples come from: the "
                             "model's set without exclusion, generated there on first use "
                             "(default: its cache folder)")
    parser.add_argument('--max-images', type=positive_int, default=None,
                        help='--evaluate: use only the first images of each split (default: '
                             'all)')
    parser.add_argument('--output',
                        help='--evaluate: JSON file (default: <params>_fewshot.json)')
    add_loader_flags(parser)
    add_knn_flag(parser)
    add_gpus_flag(parser)
    return parser


def _shots(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers such as 1,5,20, got {text}")
    return values


def _register(args) -> int:
    ctx = contexts(args.gpus)
    args.params = checkpoint_path(args)
    model = load_model(args.params, ctx)
    images, boxes = _read_examples(args.examples)
    bank = checkpoint_bank(model, ctx, args.batch_size, num_workers=args.num_workers)
    bank = register_class(model, bank, args.name, images, boxes, ctx, args.batch_size,
                          args.replace)
    path = bank_path(model.checkpoint.path)
    save_bank(bank, path)
    index = bank.classes.index(args.name)
    print(f"registered {args.name!r} (class id {index}) from {len(args.examples)} boxes: "
          f"{path}")
    return 0


def _without_exclusion(root: str) -> dict:
    """The :func:`~gluon_ssdcl.data.digitset.ensure_digits` parameters of the digits set at
    ``root`` (its manifest), without its excluded classes."""
    try:
        with open(os.path.join(root, 'manifest.json')) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{root} has no readable digits manifest: {err}") from err
    keys = ('num_train', 'num_val', 'seed', 'image_size', 'min_digits', 'max_digits',
            'val_fraction')
    return {key: manifest[key] for key in keys}


def _evaluate(args) -> int:
    ctx = contexts(args.gpus)
    args.params = checkpoint_path(args)
    model = load_model(args.params, ctx)
    meta = model.checkpoint.meta
    flags = meta.get('flags', {})
    if meta.get('dataset') != 'digits' or not flags.get('digits_exclude'):
        raise CommandError(f"--evaluate needs a digits model trained with --digits-exclude; "
                           f"{model.checkpoint.path} was not")
    if not set(args.classes) <= set(flags['digits_exclude']):
        raise CommandError(f"--classes {','.join(map(str, args.classes))}: the model was "
                           f"trained without {','.join(map(str, flags['digits_exclude']))} only")
    model.net.hybridize()
    bank = checkpoint_bank(model, ctx, args.batch_size, num_workers=args.num_workers,
                           max_images=args.max_images, registered=False)
    # the examples: training images of the same digits set without exclusion (source digits
    # disjoint from the validation images')
    full_root = ensure_digits(args.examples_root, **_without_exclusion(meta['dataset_root']),
                              progress=False)
    example_dataset, _ = get_dataset('digits', full_root)
    _, val_dataset = get_dataset('digits', meta['dataset_root'])
    images = validation_detections(model.net, val_dataset, ctx, args.batch_size,
                                   args.num_workers, args.max_images)
    if args.max_images:
        val_dataset = val_dataset.take(args.max_images)
    results = few_shot_evaluation(model, bank, example_dataset, images, args.classes,
                                  args.shots, ctx, args.draws, meta.get('seed', 0), args.knn_k,
                                  args.batch_size, val_dataset if args.fine_tune else None)
    output = args.output or os.path.splitext(model.checkpoint.path)[0] + '_fewshot.json'
    save_results(results, output)
    print(format_few_shot(results))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: register a class (or ``--evaluate``); see the module docstring.

    Returns 0, or 1 after one ``error: ...`` line (unusable checkpoint or image, a box without
    positive anchors, a trained class's name); bad flags exit with 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fine_tune and not args.evaluate:
        parser.error("--fine-tune is for --evaluate")
    if args.evaluate:
        if not args.classes:
            parser.error("--evaluate needs --classes (the held-out digits, e.g. 8,9)")
        if args.examples or args.name or args.replace:
            parser.error("--evaluate draws its own examples: give no examples, --name or "
                         "--replace")
        return run(lambda: _evaluate(args))
    if not args.name or not args.examples:
        parser.error("give --name and at least one IMAGE:xmin,ymin,xmax,ymax example "
                     "(or --evaluate)")
    try:
        for text in args.examples:
            parse_example(text)
    except ValueError as err:
        parser.error(str(err))
    return run(lambda: _register(args))


if __name__ == '__main__':
    program(main)
