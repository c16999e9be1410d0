"""``gluon-ssdcl train`` (and ``python train_ssd_center.py``): GluonCV's train_ssd.py flags plus the
center-loss ones."""
import argparse
import logging
import os
import sys
import traceback
from typing import Callable

import mxnet as mx
from mxnet.gluon.data import SimpleDataset

from ..data.datasets import get_dataloader, get_dataset
from ..data.digitset import ensure_digits
from ..engine.checkpoint import checkpoint_stem, load_checkpoint
from ..engine.distributed import DIST_KVSTORES, KVSTORES, Workers
from ..engine.train import TrainConfig, fit, set_seed
from ..evaluation.compare import compare_classifiers, format_table, save_results
from ..evaluation.inference import detection_map, positive_loader
from ..losses.multibox import Mode, MultiBoxCenterLoss
from ..model.ssd import initialize_params
from ..model.zoo import get_model, list_models
from ..utils.files import prefix_lock, remove_leftovers
from ..viz import FeatureMapRecorder
from .common import (OneLineErrorParser, UsageError, add_gpus_flag, add_knn_flag, add_loader_flags,
                     classes_flag, contexts, log_to_file, nonnegative_int, positive_float,
                     positive_int, run)

__all__ = ['build_parser', 'parse_args', 'resume_flags', 'RESUMED_FLAGS', 'main']

logger = logging.getLogger(__name__)


def build_parser():
    """The argument parser (GluonCV's train_ssd.py names where they exist)."""
    p = OneLineErrorParser(
        prog='gluon-ssdcl train', allow_abbrev=False,
        description='Train an SSD detector with a center-loss embedding head.')
    for add_flags in (_add_model_and_data_flags, _add_schedule_flags, _add_run_flags,
                      _add_center_loss_flags):
        add_flags(p)
    return p


def _add_model_and_data_flags(p):
    p.add_argument('--network', default='small',
                   help="base network: small (plain convolutions, for CPUs), tiny, mobilenet0.25, "
                        "mobilenet1.0, vgg16_atrous, resnet50_v1 (default: small)")
    p.add_argument('--data-shape', type=positive_int, default=256,
                   help='input size; with --network it names the model (default: 256)')
    add_loader_flags(p)
    p.add_argument('--dataset', choices=('digits', 'voc', 'custom'), default='digits',
                   help='digits: the offline data set, generated on first use (default)')
    p.add_argument('--dataset-root', default=None,
                   help='data folder (digits: the cache, default ~/.gluon_ssdcl/datasets/digits, '
                        'or a sibling named by --digits-train/--digits-val when not the '
                        'defaults; voc: ~/.mxnet/datasets/voc; custom: required)')
    p.add_argument('--classes', default=None, help='custom: comma-separated class names '
                                                   '(default: read from the annotations)')
    p.add_argument('--digits-train', type=positive_int, default=4000,
                   help='digits: training images to generate (default: 4000)')
    p.add_argument('--digits-val', type=positive_int, default=500,
                   help='digits: validation images to generate (default: 500)')
    p.add_argument('--digits-exclude', type=classes_flag, default=[],
                   help='digits: classes left out of the training images, e.g. 8,9 (held out '
                        'for open-set evaluation; the class list stays 0..9 and validation '
                        'keeps all classes)')
    p.add_argument('--skip-bad', action='store_true',
                   help='skip images that fail the data check (one warning each) instead of '
                        'refusing the data set')
    p.add_argument('--augment', action=argparse.BooleanOptionalAction, default=None,
                   help="GluonCV's SSD augmentation (colour, expand, crop; no flips). Default: "
                        "off for digits, whose canvases are already varied (the resized images "
                        "and targets are then computed once and held in memory), on otherwise")



def _add_schedule_flags(p):
    p.add_argument('--epochs', type=positive_int, default=7,
                   help='default: 7; 3 with --center-only')
    p.add_argument('--lr', type=positive_float, default=0.04,
                   help='peak learning rate (default: 0.04; 0.001 with --center-only)')
    p.add_argument('--lr-mode', choices=('cosine', 'step'), default='cosine')
    p.add_argument('--lr-decay', type=float, default=0.1, help='step mode: decay factor')
    p.add_argument('--lr-decay-epoch', default='', help="step mode: epochs, e.g. '160,200'")
    p.add_argument('--warmup-iters', type=nonnegative_int, default=100,
                   help='default: 100; 0 with --center-only')
    p.add_argument('--momentum', type=float, default=0.9)
    p.add_argument('--wd', type=float, default=5e-4)
    p.add_argument('--clip-gradient', type=float, default=0.0,
                   help='clip each network gradient element to this (default 0: off)')
    p.add_argument('--seed', type=int, default=233)


def _add_run_flags(p):
    add_gpus_flag(p)
    p.add_argument('--kvstore', choices=KVSTORES, default='device',
                   help="MXNet's gradient store: device or local in one process; dist_sync or "
                        "dist_device_sync in a job of several workers started by python -m "
                        "gluon_ssdcl.launch (each reads its shard; --batch-size is per worker)")
    p.add_argument('--resume', default='',
                   help="continue a run: its --save-prefix (or its _last.params file); the run's "
                        "mode, data, model and hyper-parameters are taken from it (flags given "
                        "again must agree; --epochs may extend it)")
    p.add_argument('--start-epoch', type=nonnegative_int, default=None,
                   help='epoch to resume at (default: the one after the checkpoint)')
    p.add_argument('--val-interval', type=positive_int, default=1)
    p.add_argument('--save-prefix', default='', help='checkpoint/log prefix, one run at a time '
                   '(default: runs/<model>_<mode>, plus _d<embed-dim> and _n<train>-<val> when '
                   'they are not the defaults; with --resume: the resumed run\'s)')
    p.add_argument('--save-interval', type=nonnegative_int, default=0,
                   help='also keep <prefix>_<epoch>.params every N epochs (0: never)')
    p.add_argument('--log-interval', type=positive_int, default=100,
                   help='kept for GluonCV compatibility: progress is a tqdm bar per epoch')
    p.add_argument('--pretrained-base', action='store_true',
                   help='start from GluonCV base weights found in ~/.mxnet/models (no download)')
    p.add_argument('--plotting', action='store_true',
                   help='after each validation save <prefix>_features_{train,val}_epoch<N>.png '
                        '(embeddings of the first --plot-images images), at the end a GIF each')
    p.add_argument('--plot-images', type=positive_int, default=100,
                   help='--plotting: images per split whose positive anchors are plotted')


def _add_center_loss_flags(p):
    modes = p.add_mutually_exclusive_group()
    modes.add_argument('--center-loss', action='store_true',
                       help='softmax+center mode: add λ·center loss to the multibox loss')
    modes.add_argument('--center-only', action='store_true',
                       help='center mode: box, object-vs-background and center loss, the class '
                            'head and centers fixed (a second stage, see --init-from)')
    p.add_argument('--init-from', default='',
                   help='checkpoint whose network and centers start this run (second stage)')
    p.add_argument('--lmbd', type=positive_float, default=1.0,
                   help='λ, weight of the center loss (default: 1)')
    p.add_argument('--alpha', type=float, default=0.5, help='center update rate in (0, 1]')
    p.add_argument('--embed-dim', type=positive_int, default=16)
    add_knn_flag(p)


def _model_name(args):
    names = list_models()
    for suffix in (args.dataset, 'custom'):
        name = f'ssd_{args.data_shape}_{args.network}_center_{suffix}'
        if name in names:
            return name
    shapes = sorted({n for n in names if f'_{args.network}_' in n})
    raise ValueError(f"no model for --network {args.network} --data-shape {args.data_shape}; "
                     f"registered: {', '.join(shapes or names)}")


# the center-only stage fine-tunes a softmax-center run: its defaults where the flag is not given
CENTER_ONLY_DEFAULTS = {'epochs': 3, 'lr': 0.001, 'warmup_iters': 0}

# flags a resumed run takes from its checkpoint (the others, e.g. --gpus, -j, may change)
RESUMED_FLAGS = ('network', 'data_shape', 'batch_size', 'dataset', 'dataset_root', 'classes',
                 'digits_train', 'digits_val', 'digits_exclude', 'skip_bad', 'augment', 'epochs', 'lr', 'lr_mode',
                 'lr_decay', 'lr_decay_epoch', 'warmup_iters', 'momentum', 'wd',
                 'clip_gradient', 'center_loss', 'center_only', 'lmbd',
                 'alpha', 'embed_dim', 'seed')


def _given_flags(parser, argv):
    """The destinations of the flags written on the command line ``argv``."""
    return {action.dest for action in parser._actions  # pylint: disable=protected-access
            for option in action.option_strings for token in argv
            if token == option or token.startswith(option + '=')}


def _default_prefix(args, parser):
    """``runs/<model>_<mode>``, plus ``_d<embed_dim>`` and ``_n<train>-<val>`` (digits) when
    they are not the defaults and ``_without<classes>`` for ``--digits-exclude``, so that
    different runs do not share files."""
    prefix = f'{args.model}_{args.mode.value}'
    if args.embed_dim != parser.get_default('embed_dim'):
        prefix += f'_d{args.embed_dim}'
    sizes = (args.digits_train, args.digits_val)
    if args.dataset == 'digits' and sizes != tuple(map(parser.get_default,
                                                       ('digits_train', 'digits_val'))):
        prefix += f'_n{sizes[0]}-{sizes[1]}'
    if args.dataset == 'digits' and args.digits_exclude:
        prefix += '_without' + '-'.join(map(str, args.digits_exclude))
    return os.path.join('runs', prefix)


def _mode(args):
    return (Mode.CENTER if args.center_only else
            Mode.SOFTMAX_CENTER if args.center_loss else Mode.SOFTMAX)


def parse_args(argv=None):
    """Parse and check the flags; bad values exit with code 2 and a one-line reason.

    With ``--resume`` the run's own flags are restored later, by :func:`resume_flags`.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = _given_flags(parser, argv)
    if not 0 < args.alpha <= 1:
        parser.error(f"--alpha must be in (0, 1], got {args.alpha}")
    if args.kvstore in DIST_KVSTORES and os.environ.get('DMLC_ROLE') != 'worker':
        parser.error(f"--kvstore {args.kvstore} runs in a job of workers: python -m "
                     "gluon_ssdcl.launch -n WORKERS -- python train_ssd_center.py ...")
    if args.init_from and args.resume:
        parser.error("--init-from starts a new run and --resume continues one: give one")
    args.mode = _mode(args)
    if args.center_only:
        for flag, value in CENTER_ONLY_DEFAULTS.items():
            if flag not in args.given:
                setattr(args, flag, value)
    if args.init_from:
        args.init_from = checkpoint_stem(args.init_from, default='best') + '.params'
        if not os.path.isfile(args.init_from):
            parser.error(f"--init-from: no such file {args.init_from}")
    if args.resume:
        path = checkpoint_stem(args.resume) + '.params'
        if not os.path.isfile(path):
            parser.error(f"--resume: no checkpoint {path}")
        args.resume = path
    if args.dataset == 'custom' and not args.dataset_root:
        parser.error("--dataset custom needs --dataset-root")
    if args.dataset_root and args.dataset != 'digits' and not os.path.isdir(args.dataset_root):
        parser.error(f"--dataset-root: no such folder {args.dataset_root}")
    if args.augment is None:
        args.augment = args.dataset != 'digits'
    if args.classes and args.dataset != 'custom':
        parser.error("--classes is only for --dataset custom")
    if args.digits_exclude and args.dataset != 'digits':
        parser.error("--digits-exclude is only for --dataset digits")
    try:
        args.lr_decay_epoch = [int(e) for e in args.lr_decay_epoch.split(',') if e.strip()]
        args.model = _model_name(args)
    except ValueError as err:
        parser.error(str(err))
    args.save_prefix = args.save_prefix or _default_prefix(args, parser)
    return args


def resume_flags(args, meta):
    """Take the resumed run's flags (:data:`RESUMED_FLAGS`) from its checkpoint ``meta``.

    Raises
    ------
    UsageError
        When a flag given again disagrees with the checkpoint, or ``--epochs`` leaves nothing
        to train.
    """
    saved = meta.get('flags')
    if not saved:
        raise UsageError(f"{args.resume} records no flags to resume with; start a new run from "
                         "it with --init-from")
    for dest in RESUMED_FLAGS:
        if dest not in saved:
            continue
        if dest in args.given and getattr(args, dest) != saved[dest] and dest != 'epochs':
            raise UsageError(
                f"--{dest.replace('_', '-')} {getattr(args, dest)} differs from the resumed "
                f"run's {saved[dest]}: a resumed run keeps its settings (omit the flag, or "
                "start a new run with --init-from)")
        if dest not in args.given:
            setattr(args, dest, saved[dest])
    if args.epochs <= meta['epoch'] + 1 and args.start_epoch is None:
        raise UsageError(f"--epochs {args.epochs}: {args.resume} has already trained "
                         f"{meta['epoch'] + 1} epochs; pass more to train on")
    args.mode, args.model = _mode(args), meta['network']
    if 'save_prefix' not in args.given:
        stem = checkpoint_stem(args.resume)
        args.save_prefix = stem[:-len('_last')] if stem.endswith('_last') else stem
    logger.info("resuming %s: %s mode, %s, %d epochs", args.resume, args.mode.value,
                args.model, args.epochs)


def _feature_recorder(args, net, train_ds, val_ds, ctx, classes, anchors):
    """A :class:`~gluon_ssdcl.viz.FeatureMapRecorder` over the first ``--plot-images`` images
    of each split, or None without ``--plotting``."""
    if not args.plotting:
        return None
    if not args.mode.uses_center:
        logger.info("--plotting in softmax mode: the softmax alone shapes the embeddings and "
                    "the centers are not trained")
    loaders = {split: positive_loader(
        SimpleDataset([dataset[i] for i in range(min(args.plot_images, len(dataset)))]), net,
        args.batch_size, anchors=anchors)
        for split, dataset in (('train', train_ds), ('val', val_ds))}
    return FeatureMapRecorder(loaders, classes, args.save_prefix, ctx)


def _load_data(args):
    """(train_dataset, val_dataset, root) of the flags; the digits set is made on first use."""
    root = args.dataset_root
    if args.dataset == 'digits':
        root = ensure_digits(root, num_train=args.digits_train, num_val=args.digits_val,
                             exclude_classes=args.digits_exclude)
    classes = args.classes.split(',') if args.classes else None
    train_ds, val_ds = get_dataset(args.dataset, root, classes=classes, skip_bad=args.skip_bad)
    return train_ds, val_ds, root


def _build_model(args, classes, ctx):
    """The initialised network of the flags and its (1, N, 4) anchors."""
    kwargs = {'classes': classes} if args.model.endswith('_custom') else {}
    net = get_model(args.model, embed_dim=args.embed_dim, pretrained_base=args.pretrained_base,
                    **kwargs)
    initialize_params(net, ctx)
    anchors = net.anchor_outputs(mx.nd.zeros((1, 3, args.data_shape, args.data_shape),
                                             ctx=ctx[0]))[2]
    return net, anchors


def _train_config(args, classes, root):
    """The :class:`~gluon_ssdcl.train.TrainConfig` of the flags."""
    return TrainConfig(
        mode=args.mode, epochs=args.epochs, lr=args.lr, lr_mode=args.lr_mode,
        lr_decay=args.lr_decay, lr_decay_epoch=args.lr_decay_epoch,
        warmup_iters=args.warmup_iters, momentum=args.momentum, wd=args.wd, lmbd=args.lmbd,
        alpha=args.alpha, clip_gradient=args.clip_gradient or None,
        seed=args.seed, val_interval=args.val_interval,
        save_interval=args.save_interval, save_prefix=args.save_prefix, kvstore=args.kvstore,
        meta={'network': args.model, 'classes': classes, 'embed_dim': args.embed_dim,
              'data_shape': args.data_shape, 'dataset': args.dataset, 'dataset_root': root,
              'flags': {k: v for k, v in vars(args).items() if k not in ('mode', 'given')}})


def _train(args, ctx, workers=None):
    """Load the data, build the model, train it and compare its classifiers (rank 0 of a
    distributed job's ``workers``); returns 0."""
    train_ds, val_ds, root = _load_data(args)
    classes = list(train_ds.classes)
    set_seed(args.seed)
    net, anchors = _build_model(args, classes, ctx)
    shard = (workers.rank, workers.size) if workers else (0, 1)
    train_loader, val_loader = get_dataloader(train_ds, val_ds, args.data_shape, args.data_shape,
                                              anchors, args.batch_size, args.num_workers,
                                              augment=args.augment, shard=shard,
                                              targets_ctx=ctx[0] if ctx[0].device_type == 'gpu'
                                              else None)
    loss_fn = MultiBoxCenterLoss(len(classes), args.embed_dim, args.mode, args.lmbd,
                                 sum_counts=workers.sum if workers else None)
    loss_fn.initialize(ctx=ctx)
    centers = loss_fn.center_loss.centers.weight
    leader = workers is None or workers.rank == 0
    recorder = (_feature_recorder(args, net, train_ds, val_ds, ctx, classes, anchors)
                if leader else None)

    def validate(net, epoch):
        if recorder is not None:
            recorder.record(net, centers.data(ctx[0]), epoch)
        return detection_map(net, val_loader, ctx, classes)[0]
    try:
        result = fit(net, loss_fn, train_loader, ctx, _train_config(args, classes, root),
                     validate=validate, resume=args.resume or None,
                     init_from=args.init_from or None, start_epoch=args.start_epoch,
                     workers=workers)
    finally:
        if recorder is not None and any(recorder.frames.values()):
            logger.info("feature maps: %s", ', '.join(recorder.animate()))
    if not leader:
        return 0
    results = compare_classifiers(net, centers.data(ctx[0]), train_ds, val_ds, ctx, classes,
                                  args.mode, batch_size=args.batch_size, knn_k=args.knn_k,
                                  seed=args.seed, num_workers=args.num_workers)
    results['best_map'] = result['best_map']
    print(format_table(results))
    save_results(results, f'{args.save_prefix}_eval.json')
    logger.info("checkpoints: %s_last.params, %s_best.params; results: %s_eval.json",
                *[args.save_prefix] * 3)
    return 0


def main(argv=None):
    """Run train_ssd_center.py; returns the exit code (0; 1 after one ``error: ...`` line for a
    runtime failure such as bad data, an unusable checkpoint, a NaN loss, no GPU or a save
    prefix in use by another run; 2 for bad usage). The log also goes to
    ``<save prefix>_train.log``. A worker of a distributed job (``--kvstore dist_*``) that fails
    ends its process at once (:func:`~gluon_ssdcl.distributed.run_worker`); of the workers,
    rank 0 alone holds the prefix's lock and writes the log, checkpoints, plots and results."""
    args = parse_args(argv)
    distributed = args.kvstore in DIST_KVSTORES

    def train():
        workers = Workers(args.kvstore) if distributed else None
        if args.resume:
            resume_flags(args, load_checkpoint(args.resume).meta)
        elif args.init_from:
            load_checkpoint(args.init_from)  # fail before the data is loaded
        ctx = contexts(args.gpus)
        if workers is not None and workers.rank != 0:
            return _train(args, ctx, workers)
        with prefix_lock(args.save_prefix) as killed, \
                log_to_file(f'{args.save_prefix}_train.log'):
            if killed:
                logger.info("took over %s.lock from a run that is no longer alive (%s)",
                            args.save_prefix, killed)
            remove_leftovers(args.save_prefix)
            logger.info("%s on %s with %s OpenMP threads%s", args.model, ctx,
                        os.environ.get('OMP_NUM_THREADS'),
                        f", {workers.size} workers ({args.kvstore})" if workers else '')
            return _train(args, ctx, workers)
    return run_worker(train) if distributed else run(train)


def run_worker(body: Callable[[], int]) -> int:
    """:func:`~gluon_ssdcl.cli_tools.run` for a worker of a distributed job: after a failure
    (one ``error:`` line, or a traceback for a bug) the process ends at once with its code,
    because a normal exit would wait at ps-lite's final barrier for workers that wait for this
    one. The launcher then stops the job."""
    try:
        code = run(body)
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = 1
    if code:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # pylint: disable=protected-access
    return code
