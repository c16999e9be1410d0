"""The comparison table: mAP and softmax / k-NN / nearest-center accuracy of a trained model.

On the validation set's positive anchors (anchors matched to a ground-truth box exactly as in
training): the class accuracy of the softmax head, of a k-NN classifier over the training set's
positive embeddings, and of the nearest learned center; plus the VOC07 mAP of the detector as
trained and with every detection relabelled by k-NN.

Run ``gluon-ssdcl evaluate --params runs/<run>_best.params`` to print the table and
write ``runs/<run>_best_eval.json`` beside the checkpoint. The model, classes, mode and data set
are read from the checkpoint.

``--open-set --unknown-classes 8,9`` evaluates instead how well a model trained without those
classes (``gluon-ssdcl train --digits-exclude 8,9``) tells their digits from the known ones
(:func:`open_set_evaluation`), written to ``<params>_openset.json``.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Optional, Sequence

from ..data.datasets import get_dataset
from ..embeddings.class_bank import DEFAULT_QUANTILE
from ..engine.checkpoint import load_model
from ..evaluation.class_banks import bank_scores, checkpoint_bank
from ..evaluation.compare import compare_classifiers, format_table, save_results
from ..evaluation.inference import validation_detections
from ..evaluation.open_set import format_open_set, open_set_evaluation
from .common import (CommandError, OneLineErrorParser, add_checkpoint_flag, add_gpus_flag,
                     add_knn_flag, add_loader_flags, checkpoint_path, class_names, contexts, number,
                     positive_int, program, run)

__all__ = ['build_parser', 'main']

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog='gluon-ssdcl evaluate',
        description='Evaluate a gluon_ssdcl checkpoint: mAP and softmax vs k-NN vs '
                    'nearest-center class accuracy on the validation set.')
    add_checkpoint_flag(parser)
    parser.add_argument('--dataset', choices=('digits', 'voc', 'custom'),
                        help="data set (default: the checkpoint's)")
    parser.add_argument('--dataset-root', help="data set folder (default: the checkpoint's)")
    parser.add_argument('--classes', type=class_names,
                        help="comma-separated class names (default: the checkpoint's)")
    add_loader_flags(parser)
    add_knn_flag(parser)
    parser.add_argument('--gallery-size', type=positive_int, default=20000,
                        help='cap on the training embeddings used by the k-NN (default: 20000)')
    add_gpus_flag(parser)
    parser.add_argument('--output', help='JSON file (default: <params>_eval.json, with '
                                         '--open-set <params>_openset.json)')
    parser.add_argument('--open-set', action='store_true',
                        help='evaluate the rejection of --unknown-classes instead, on a model '
                             'trained without them (gluon-ssdcl train --digits-exclude) '
                             '(default: off)')
    parser.add_argument('--unknown-classes', type=class_names,
                        help='--open-set: comma-separated names of the held-out classes '
                             '(required with --open-set; default: none)')
    parser.add_argument('--quantile', type=number(0, 1, low_open=True), default=DEFAULT_QUANTILE,
                        help=f'--open-set: quantile of the class radii (default: '
                             f'{DEFAULT_QUANTILE})')
    parser.add_argument('--max-images', type=positive_int, default=None,
                        help='--open-set: use only the first images of each split, a quick '
                             'look (default: all)')
    parser.add_argument('--skip-bad', action='store_true',
                        help='leave out images with errors instead of stopping (default: off)')
    return parser


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
    return open_set_evaluation(images, bank, bank_scores(model.net, bank), classes, unknown,
                               args.knn_k)


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.open_set and not args.unknown_classes:
        parser.error("--open-set needs --unknown-classes (the classes held out of training)")
    if args.unknown_classes and not args.open_set:
        parser.error("--unknown-classes is for --open-set")

    def evaluate() -> int:
        args.params = checkpoint_path(args)
        output = args.output or _default_output(args.params,
                                                'openset' if args.open_set else 'eval')
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
