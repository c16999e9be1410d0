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
from ..data.digitset import DEFAULT_NUM_TRAIN, ensure_digits
from ..engine.checkpoint import checkpoint_stem, load_checkpoint, run_checkpoints, run_prefix
from ..engine.distributed import DIST_KVSTORES, KVSTORES, Workers
from ..engine.train import TrainConfig, fit, set_seed
from ..evaluation.compare import compare_classifiers, format_table, save_results
from ..evaluation.inference import detection_map, positive_loader
from ..losses.multibox import Mode, MultiBoxCenterLoss
from ..model.ssd import initialize_params
from ..model.zoo import (GLUONCV_WEIGHT_DECAY, ZOO_REVISION, checkpoint_network,
                         default_embed_hidden, default_weight_decay, get_model, list_models)
from ..utils.files import prefix_lock, remove_leftovers
from ..utils.progress import progress_bars, progress_enabled
from ..viz import FeatureMapRecorder, save_history_plot
from .common import (OneLineErrorParser, UsageError, add_gpus_flag, add_knn_flag, add_loader_flags,
                     as_given, class_names, classes_flag, comma_separated, contexts, integer,
                     log_to_file, nonnegative_int, number, positive_float, positive_int, run)

__all__ = ['build_parser', 'parse_args', 'resume_flags', 'init_from_flags', 'RESUMED_FLAGS',
           'CENTER_ONLY_DEFAULTS', 'INIT_FROM_DEFAULTS', 'main']

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
                   help="base network: small (for CPUs: a patch stem, then plain convolutions), "
                        "plain (the previous small: plain convolutions only), tiny, "
                        "mobilenet0.25, mobilenet1.0, vgg16_atrous, resnet50_v1 (default: small)")
    p.add_argument('--data-shape', type=positive_int, default=256,
                   help='input size; with --network it names the model (default: 256)')
    add_loader_flags(p)
    p.add_argument('--dataset', choices=('digits', 'voc', 'custom'), default='digits',
                   help='digits: the offline data set, generated on first use (default)')
    p.add_argument('--dataset-root', default=None,
                   help='data folder (digits: the cache, default ~/.gluon_ssdcl/datasets/digits, '
                        'or a sibling named by --digits-train/--digits-val when not the '
                        'defaults; voc: ~/.mxnet/datasets/voc; custom: required)')
    p.add_argument('--classes', type=as_given(class_names), default=None,
                   help='custom: comma-separated distinct class names (default: read from the '
                        'annotations)')
    p.add_argument('--digits-train', type=positive_int, default=DEFAULT_NUM_TRAIN,
                   help=f'digits: training images to generate (default: {DEFAULT_NUM_TRAIN})')
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
                        "and targets are then computed once and held in memory), on otherwise; "
                        "with --init-from, as the starting run")



def _add_schedule_flags(p):
    p.add_argument('--epochs', type=positive_int, default=4,
                   help='default: 4; 3 with --center-only')
    p.add_argument('--lr', type=number(0, 10, low_open=True), default=0.04,
                   help='peak learning rate, at most 10 (default: 0.04; 0.001 with '
                        '--center-only or --init-from)')
    p.add_argument('--lr-mode', choices=('cosine', 'step'), default='cosine',
                   help='schedule after the warm-up (default: %(default)s)')
    p.add_argument('--lr-decay', type=number(0, 1, low_open=True), default=0.1,
                   help='step mode: decay factor in (0, 1] (default: %(default)s)')
    p.add_argument('--lr-decay-epoch', type=comma_separated(nonnegative_int),
                   default='', help="step mode: epochs, e.g. '160,200'")
    p.add_argument('--warmup-iters', type=nonnegative_int, default=100,
                   help='default: 100; 0 with --center-only or --init-from')
    p.add_argument('--momentum', type=number(0, 1, high_open=True), default=0.9,
                   help='SGD momentum in [0, 1) (default: %(default)s)')
    p.add_argument('--wd', type=number(0, 1), default=None,
                   help="weight decay in [0, 1] (default: the network's, 0.005 for small and "
                        "GluonCV's 0.0005 for the others)")
    p.add_argument('--clip-gradient', type=number(0), default=0.0,
                   help='clip each network gradient element to this (default 0: off)')
    p.add_argument('--seed', type=int, default=233,
                   help='seed of the initialisation and the data order (default: %(default)s)')


def _add_run_flags(p):
    add_gpus_flag(p)
    p.add_argument('--kvstore', choices=KVSTORES, default='device',
                   help="MXNet's gradient store: device or local in one process; dist_sync or "
                        "dist_device_sync in a job of several workers started by python -m "
                        "gluon_ssdcl.launch (each reads its shard; --batch-size is per worker) "
                        "(default: %(default)s)")
    p.add_argument('--resume', default='',
                   help="continue a run: its --save-prefix (or its _last.params file); the run's "
                        "mode, data, model and hyper-parameters are taken from it (flags given "
                        "again must agree; --epochs may extend it)")
    p.add_argument('--start-epoch', type=nonnegative_int, default=None,
                   help='epoch to resume at (default: the one after the checkpoint)')
    p.add_argument('--val-interval', type=positive_int, default=1,
                   help='validate every N epochs, and after the last (default: %(default)s)')
    p.add_argument('--save-prefix', default='', help='checkpoint/log prefix, one run at a time '
                   '(default: runs/<model>_<mode>, plus _d<embed-dim>, _h<embed-hidden> and '
                   '_n<train>-<val> when they are not the defaults; with --resume: the resumed '
                   'run\'s)')
    p.add_argument('--save-interval', type=nonnegative_int, default=0,
                   help='also keep <prefix>_<epoch>.params every N epochs (0: never; '
                        'default: %(default)s)')
    p.add_argument('--log-interval', type=nonnegative_int, default=50,
                   help='log the mean losses so far, the speed and the learning rate every N '
                        'batches (0: never; default: %(default)s); each epoch logs one line')
    p.add_argument('--progress', action=argparse.BooleanOptionalAction, default=None,
                   help='progress bars on stderr (default: when stderr is a terminal)')
    p.add_argument('--overwrite', action='store_true',
                   help='start a new run on a --save-prefix that holds another run, removing '
                        'its checkpoints, results, log and history plot first (without it, '
                        'such a run is refused)')
    p.add_argument('--pretrained-base', action='store_true',
                   help='start from GluonCV base weights found in ~/.mxnet/models (no download)')
    p.add_argument('--plotting', action='store_true',
                   help='after each validation save <prefix>_features_{train,val}_epoch<N>.png '
                        '(PCA of the embeddings of the first --plot-images images), at the end '
                        'a GIF each and <prefix>_features_val_tsne.png (t-SNE of the val '
                        'embeddings at the last validation)')
    p.add_argument('--plot-images', type=positive_int, default=100,
                   help='--plotting: images per split whose positive anchors are plotted '
                        '(default: %(default)s)')


def _add_center_loss_flags(p):
    modes = p.add_mutually_exclusive_group()
    modes.add_argument('--center-loss', action='store_true',
                       help='softmax+center mode: add λ·center loss to the multibox loss')
    modes.add_argument('--center-only', action='store_true',
                       help='center mode: box, object-vs-background and center loss, the class '
                            'head and centers fixed (a second stage, see --init-from)')
    p.add_argument('--init-from', default='',
                   help='checkpoint whose network and centers start this run (a second stage, '
                        'or fine-tuning to other data): it is validated first and is the first '
                        '_best.params, which only a better epoch replaces')
    p.add_argument('--lmbd', type=positive_float, default=1.0,
                   help='λ, weight of the center loss (default: 1)')
    p.add_argument('--alpha', type=float, default=0.5,
                   help='center update rate in (0, 1] (default: %(default)s)')
    p.add_argument('--push-margin', type=number(0), default=0.0,
                   help='Δ of a push-away term (ORE\'s hinge, weighted by λ): positive embeddings '
                        'are pushed beyond Δ from the other classes\' centers; center modes '
                        'only (default: 0, off)')
    p.add_argument('--push-negatives', action='store_true',
                   help='with --push-margin, push the hard-negative (background) embeddings '
                        'beyond Δ from every center too (default: off)')
    p.add_argument('--embed-dim', type=integer(1, 4096), default=16,
                   help='dimension of the embeddings, at most 4096 (default: %(default)s)')
    p.add_argument('--embed-hidden', type=integer(0, 4096), default=None,
                   help='channels of a 3x3 conv-BN-ReLU before each embedding predictor (then '
                        '1x1); 0: none, the predictor is a 3x3 convolution (default: the '
                        "network's, 128 for small and 0 for the others)")
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

# a run started from a trained model (--init-from) fine-tunes it: its defaults where the flag is
# not given, measured with 3 epochs on 64 new digits images from the default digits run (mAP
# 0.846 on their 32 validation images): lr 0.04 (reached after a warm-up cut to half the short
# run) left 0.629, 0.004 left 0.79 to 0.81 on augmented images and 0.851 on plain ones, 0.001 on
# plain ones 0.850 (0.854 after 10 epochs, where 0.004 fell back to 0.842). --augment defaults
# to the starting run's (init_from_flags); BatchNorm statistics are not the cause (lr 1e-9 on
# augmented images: 0.849).
INIT_FROM_DEFAULTS = {'lr': 0.001, 'warmup_iters': 0}

# flags a resumed run takes from its checkpoint (the others, e.g. --gpus, -j, may change)
RESUMED_FLAGS = ('network', 'data_shape', 'batch_size', 'dataset', 'dataset_root', 'classes',
                 'digits_train', 'digits_val', 'digits_exclude', 'skip_bad', 'augment', 'epochs',
                 'lr', 'lr_mode', 'lr_decay', 'lr_decay_epoch', 'warmup_iters', 'momentum', 'wd',
                 'clip_gradient', 'center_loss', 'center_only', 'lmbd', 'push_margin',
                 'push_negatives', 'alpha', 'embed_dim', 'embed_hidden', 'seed')


def _given_flags(parser, argv):
    """The destinations of the flags written on the command line ``argv``."""
    return {action.dest for action in parser._actions  # pylint: disable=protected-access
            for option in action.option_strings for token in argv
            if token == option or token.startswith(option + '=')}


def _default_prefix(args, parser):
    """``runs/<model>_<mode>``, plus ``_d<embed_dim>``, ``_h<embed_hidden>`` and
    ``_n<train>-<val>`` (digits) when they are not the defaults (the network's, for
    ``embed_hidden``), ``_without<classes>`` for ``--digits-exclude`` and ``_push<Δ>[-neg]`` for
    ``--push-margin``, so that different runs do not share files."""
    prefix = f'{args.model}_{args.mode.value}'
    if args.embed_dim != parser.get_default('embed_dim'):
        prefix += f'_d{args.embed_dim}'
    if args.embed_hidden != default_embed_hidden(args.model):
        prefix += f'_h{args.embed_hidden}'
    sizes = (args.digits_train, args.digits_val)
    if args.dataset == 'digits' and sizes != tuple(map(parser.get_default,
                                                       ('digits_train', 'digits_val'))):
        prefix += f'_n{sizes[0]}-{sizes[1]}'
    if args.dataset == 'digits' and args.digits_exclude:
        prefix += '_without' + '-'.join(map(str, args.digits_exclude))
    if args.push_margin:
        prefix += f'_push{args.push_margin:g}' + ('-neg' if args.push_negatives else '')
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
    if args.overwrite and args.resume:
        parser.error("--overwrite replaces the run of a prefix and --resume continues it: "
                     "give one")
    args.mode = _mode(args)
    if args.push_margin and not args.mode.uses_center:
        parser.error("--push-margin pushes from the centers: train with --center-loss or "
                     "--center-only")
    if args.push_negatives and not args.push_margin:
        parser.error("--push-negatives needs --push-margin")
    args.applied_defaults = _stage_defaults(args)
    for flag, value in args.applied_defaults.items():
        setattr(args, flag, value)
    if args.init_from:
        args.init_from = _checkpoint_flag(parser, '--init-from', args.init_from, 'best',
                                          'no such file')
    if args.resume:
        args.resume = _checkpoint_flag(parser, '--resume', args.resume, 'last', 'no checkpoint')
        prefix = run_prefix(args.resume)
        if 'save_prefix' in args.given and \
                os.path.abspath(args.save_prefix) != os.path.abspath(prefix):
            parser.error(f"--save-prefix {args.save_prefix}: a resumed run writes to its own "
                         f"prefix, {prefix} (omit --save-prefix, or start a new run from the "
                         "checkpoint with --init-from)")
        args.save_prefix = prefix
    elif args.start_epoch is not None and args.start_epoch >= args.epochs:
        parser.error(_nothing_to_train(args))
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
        args.model = _model_name(args)
    except ValueError as err:
        parser.error(str(err))
    if args.embed_hidden is None and not args.resume:  # a resumed run's is its checkpoint's
        args.embed_hidden = default_embed_hidden(args.model)
    if args.wd is None and not args.resume:  # a resumed run's is its checkpoint's
        args.wd = default_weight_decay(args.model)
    args.save_prefix = args.save_prefix or _default_prefix(args, parser)
    return args


def _stage_defaults(args):
    """{flag: value} of :data:`CENTER_ONLY_DEFAULTS` (``--center-only``) and
    :data:`INIT_FROM_DEFAULTS` (``--init-from``) for the flags not given."""
    defaults = {**(INIT_FROM_DEFAULTS if args.init_from else {}),
                **(CENTER_ONLY_DEFAULTS if args.center_only else {})}
    return {flag: value for flag, value in defaults.items() if flag not in args.given}


def _flag_text(flag, value):
    """``--lr 0.001``; for ``augment``, which is a default only when taken from the starting
    run, ``--no-augment (the starting run's)``."""
    if flag == 'augment':
        return f"--{'' if value else 'no-'}augment (the starting run's)"
    return f"--{flag.replace('_', '-')} {value}"


def init_from_flags(args, meta):
    """Without ``--augment`` or ``--no-augment``, a run started from the checkpoint ``meta``
    (``--init-from``) augments as the starting run did, when its flags record it: training a
    model on augmented images it was not trained with lowered its mAP on plain ones (measured)."""
    saved = meta.get('flags') or {}
    if 'augment' not in args.given and 'augment' in saved:
        args.augment = args.applied_defaults['augment'] = saved['augment']


def _checkpoint_flag(parser, flag, value, default, missing):
    """The weights file a checkpoint flag names (see ``checkpoint_stem``); exit 2 with
    ``<flag>: <missing> <file>`` when nothing by either name exists. A name that exists but is
    no checkpoint file (a directory, a symlink loop) is kept, for loading to say what it is."""
    path = checkpoint_stem(value, default=default) + '.params'
    if os.path.lexists(path):
        return path
    if os.path.lexists(value):
        return value
    return parser.error(f"{flag}: {missing} {path}")


def _nothing_to_train(args):
    return (f"--start-epoch {args.start_epoch} leaves nothing to train with --epochs "
            f"{args.epochs} (epochs count from 0)")


def resume_flags(args, meta):
    """Take the resumed run's flags (:data:`RESUMED_FLAGS`) from its checkpoint ``meta``.

    Raises
    ------
    UsageError
        When a flag given again disagrees with the checkpoint, or ``--epochs`` or
        ``--start-epoch`` leaves nothing to train.
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
    if args.embed_hidden is None:  # saved before the flag existed, when no head had the layer
        args.embed_hidden = meta.get('embed_hidden', 0)
    if args.wd is None:  # flags saved without it: the default of every network then
        args.wd = GLUONCV_WEIGHT_DECAY
    if args.epochs <= meta['epoch'] + 1 and args.start_epoch is None:
        raise UsageError(f"--epochs {args.epochs}: {args.resume} has already trained "
                         f"{meta['epoch'] + 1} epochs; pass more to train on")
    if args.start_epoch is not None and args.start_epoch >= args.epochs:
        raise UsageError(_nothing_to_train(args))
    args.mode, args.model = _mode(args), checkpoint_network(meta)
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
                             exclude_classes=args.digits_exclude, progress=progress_enabled())
    classes = args.classes.split(',') if args.classes else None
    train_ds, val_ds = get_dataset(args.dataset, root, classes=classes, skip_bad=args.skip_bad)
    return train_ds, val_ds, root


def _build_model(args, classes, ctx):
    """The initialised network of the flags and its (1, N, 4) anchors."""
    kwargs = {'classes': classes} if args.model.endswith('_custom') else {}
    net = get_model(args.model, embed_dim=args.embed_dim, embed_hidden=args.embed_hidden,
                    pretrained_base=args.pretrained_base, **kwargs)
    initialize_params(net, ctx)
    anchors = net.anchor_outputs(mx.nd.zeros((1, 3, args.data_shape, args.data_shape),
                                             ctx=ctx[0]))[2]
    return net, anchors


def _train_config(args, classes, root):
    """The :class:`~gluon_ssdcl.engine.train.TrainConfig` of the flags."""
    return TrainConfig(
        mode=args.mode, epochs=args.epochs, lr=args.lr, lr_mode=args.lr_mode,
        lr_decay=args.lr_decay, lr_decay_epoch=args.lr_decay_epoch,
        warmup_iters=args.warmup_iters, momentum=args.momentum, wd=args.wd, lmbd=args.lmbd,
        alpha=args.alpha, clip_gradient=args.clip_gradient or None,
        seed=args.seed, val_interval=args.val_interval, save_interval=args.save_interval,
        log_interval=args.log_interval, save_prefix=args.save_prefix, kvstore=args.kvstore,
        meta={'network': args.model, 'zoo_revision': ZOO_REVISION, 'classes': classes,
              'embed_dim': args.embed_dim,
              'embed_hidden': args.embed_hidden, 'data_shape': args.data_shape,
              'dataset': args.dataset, 'dataset_root': root,
              'flags': {k: v for k, v in vars(args).items() if k not in ('mode', 'given')}})


def _train(args, ctx, workers=None):
    """Load the data, build the model, train it and compare its classifiers (rank 0 of a
    distributed job's ``workers``); returns 0."""
    if args.applied_defaults:
        logger.info("defaults of %s for the flags not given: %s", ' '.join(
            flag for flag, on in (('--center-only', args.center_only),
                                  ('--init-from', args.init_from)) if on),
            ' '.join(_flag_text(flag, value) for flag, value in args.applied_defaults.items()))
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
                                 push_margin=args.push_margin,
                                 push_negatives=args.push_negatives,
                                 sum_counts=workers.sum if workers else None)
    loss_fn.initialize(ctx=ctx)
    centers = loss_fn.center_loss.centers.weight
    leader = workers is None or workers.rank == 0
    recorder = (_feature_recorder(args, net, train_ds, val_ds, ctx, classes, anchors)
                if leader else None)

    def validate(net, epoch):
        if recorder is not None and epoch >= 0:  # not the --init-from model (epoch -1)
            recorder.record(net, centers.data(ctx[0]), epoch)
        return detection_map(net, val_loader, ctx, classes)[0]
    try:
        result = fit(net, loss_fn, train_loader, ctx, _train_config(args, classes, root),
                     validate=validate, resume=args.resume or None,
                     init_from=args.init_from or None, start_epoch=args.start_epoch,
                     workers=workers)
    finally:
        if recorder is not None and any(recorder.frames.values()):
            maps = recorder.animate()
            if recorder.frames['val']:
                maps.append(recorder.save_tsne('val'))
            logger.info("feature maps: %s", ', '.join(maps))
    if not leader:
        return 0
    logger.info("training curves: %s",
                save_history_plot(result['history'], f'{args.save_prefix}_history.png'))
    results = compare_classifiers(net, centers.data(ctx[0]), train_ds, val_ds, ctx, classes,
                                  args.mode, batch_size=args.batch_size, knn_k=args.knn_k,
                                  seed=args.seed, num_workers=args.num_workers)
    results['best_map'] = result['best_map']
    table = format_table(results)
    print(table)
    with open(_log_path(args), 'a') as log:  # the log records the results too
        log.write(table + '\n')
    save_results(results, f'{args.save_prefix}_eval.json')
    written = [path for path in (f'{args.save_prefix}_last.params',
                                 f'{args.save_prefix}_best.params') if os.path.isfile(path)]
    logger.info("checkpoints: %s; results: %s_eval.json", ', '.join(written), args.save_prefix)
    return 0


def _log_path(args):
    return f'{args.save_prefix}_train.log'


# what a run writes besides its checkpoints (the per-epoch feature maps and GIFs of --plotting
# are rewritten)
RUN_OUTPUTS = ('_eval.json', '_history.png', '_train.log', '_features_val_tsne.png')


def _claim_prefix(args):
    """Refuse a new run on a save prefix that holds another run's checkpoints, or with
    ``--overwrite`` remove that run's files (returned); call it holding the prefix's lock.

    Raises
    ------
    UsageError
        Without ``--overwrite``, naming ``--resume`` and ``--overwrite``; with it, when the
        ``--init-from`` checkpoint is one of the files to remove.
    """
    found = run_checkpoints(args.save_prefix)
    if not found:
        return []
    if not args.overwrite:
        shown = [path for path in found if path.endswith('.params')] or found
        raise UsageError(
            f"--save-prefix {args.save_prefix} holds another run ({', '.join(shown[:2])}"
            f"{', ...' if len(shown) > 2 else ''}): continue it with --resume "
            f"{args.save_prefix}, replace it with --overwrite, or choose another --save-prefix")
    if args.init_from and os.path.abspath(args.init_from) in map(os.path.abspath, found):
        raise UsageError(f"--overwrite would remove --init-from {args.init_from}: choose "
                         "another --save-prefix")
    removed = found + [args.save_prefix + suffix for suffix in RUN_OUTPUTS
                       if os.path.isfile(args.save_prefix + suffix)]
    for path in removed:
        os.remove(path)
    return removed


def main(argv=None):
    """Run train_ssd_center.py; returns the exit code (0; 1 after one ``error: ...`` line for a
    runtime failure such as bad data, an unusable checkpoint, a NaN loss, no GPU or a save
    prefix in use by another run; 2 for bad usage, such as a new run on a prefix that holds
    another run's checkpoints). The log, and the results table printed on stdout at the end,
    also go to ``<save prefix>_train.log``; ``<save prefix>.lock`` is removed at the end. A
    worker of a distributed job (``--kvstore dist_*``) that fails ends its process at once
    (:func:`~gluon_ssdcl.commands.train.run_worker`); of the workers, rank 0 alone holds the
    prefix's lock and writes the log, checkpoints, plots and results."""
    args = parse_args(argv)
    distributed = args.kvstore in DIST_KVSTORES

    def train():
        workers = Workers(args.kvstore) if distributed else None
        if args.resume:
            resume_flags(args, load_checkpoint(args.resume).meta)
        elif args.init_from:
            init_from_flags(args, load_checkpoint(args.init_from).meta)  # before the data
        ctx = contexts(args.gpus)
        if workers is not None and workers.rank != 0:
            return _train(args, ctx, workers)
        with prefix_lock(args.save_prefix) as killed:
            removed = [] if args.resume else _claim_prefix(args)
            with log_to_file(_log_path(args)):
                if killed:
                    logger.info("took over %s.lock from a run that is no longer alive (%s)",
                                args.save_prefix, killed)
                if removed:
                    logger.info("--overwrite: removed %s", ', '.join(removed))
                remove_leftovers(args.save_prefix)
                logger.info("%s on %s with %s OpenMP threads%s", args.model, ctx,
                            os.environ.get('OMP_NUM_THREADS'),
                            f", {workers.size} workers ({args.kvstore})" if workers else '')
                return _train(args, ctx, workers)
    with progress_bars(args.progress):
        return run_worker(train) if distributed else run(train)


def run_worker(body: Callable[[], int]) -> int:
    """:func:`~gluon_ssdcl.commands.common.run` for a worker of a distributed job: after a failure
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
