"""The augmented loader: its cost per image, and the training loop it feeds against the step.

(a) Per image, in this process, interleaved: decoding; GluonCV's ``SSDDefaultTrainTransform``
(GluonCV's augmentation, targets image by image); decoding and our augmentation
(``SSDTrainTransform``: GluonCV's steps, its expansion and crop from ``data.augment``); and our
whole loader path, targets made a batch at a time (``batchify``). A worker's cost against
GluonCV's, with the targets made in the workers (the default) or on the training device
(``get_dataloader(targets_ctx=)``, as ``train`` does on a GPU: the workers only decode and
augment); goal: at most half.

(b) The training loop (softmax-center mode) fed by the augmented loader with ``-j`` workers,
targets made in the workers or in the training process, against the same step on held
batches, interleaved; their ratio says how much of the step's speed the loader leaves.

    python benchmarks/bench_loader.py [--model M] [--batch-size 16] [--iters 8] [--rounds 3]
        [-j 2]
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)
import itertools

import mxnet as mx
from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

from common import build, parser, time_rounds
from gluon_ssdcl.commands.common import contexts, nonnegative_int, program, run
from gluon_ssdcl.data.datasets import get_dataloader, get_dataset, get_train_transform
from gluon_ssdcl.data.digitset import ensure_digits
from gluon_ssdcl.engine.train import make_trainers, train_epoch
from gluon_ssdcl.evaluation.inference import net_anchors
from gluon_ssdcl.losses.multibox import Mode, MultiBoxCenterLoss


def per_image_costs(dataset, transform, gluoncv_transform, batch_size, count, rounds):
    """Milliseconds per image (medians of ``rounds`` interleaved rounds over ``count`` images):
    decoding; GluonCV's ``SSDDefaultTrainTransform`` (its augmentation with flips, targets
    image by image); decoding + our augmentation; and our loader's whole path."""
    def decode():
        for i in range(count):
            dataset[i][0].wait_to_read()
        return count

    def augment():
        return [transform(*dataset[i]) for i in range(count)]

    def gluoncv_path():
        for i in range(count):
            gluoncv_transform(*dataset[i])[1].wait_to_read()
        return count

    def loader_path():
        items = augment()
        for start in range(0, count, batch_size):
            transform.batchify(items[start:start + batch_size])[1].wait_to_read()
        return count

    speeds = time_rounds({'decode': decode,
                          "GluonCV's SSDDefaultTrainTransform": gluoncv_path,
                          'decode + augment': lambda: len(augment()),
                          'decode + augment + targets (ours)': loader_path}, rounds)
    return {name: 1000 / speed for name, speed in speeds.items()}


def benchmark(args):
    """Print the per-image costs and the loop / step ratio; returns 0."""
    ctx = contexts(args.gpus)
    net = build(args.model, ctx)
    size, anchors = net.base_size, net_anchors(net)
    train, val = get_dataset('digits', args.dataset_root or ensure_digits())
    transform = get_train_transform(size, size, anchors, batch_targets=True)
    count = min(len(train), args.batch_size * args.iters)
    print(f'loader, {args.model}, batch {args.batch_size}, augmented')
    gluoncv_transform = SSDDefaultTrainTransform(size, size, anchors.as_in_context(mx.cpu()))
    costs = per_image_costs(train, transform, gluoncv_transform, args.batch_size, count,
                            args.rounds)
    for name, ms in costs.items():
        print(f'  {name:<36} {ms:8.2f} ms/image')
    theirs = costs["GluonCV's SSDDefaultTrainTransform"]
    for where, ours in (('in the workers', costs['decode + augment + targets (ours)']),
                        ('on the training device', costs['decode + augment'])):
        print(f"  a worker's cost, targets {where}: ours / GluonCV's = {ours / theirs:.3f}  "
              f"(goal <= 0.5)")
    loss_fn = MultiBoxCenterLoss(len(net.classes), net.embed_dim, Mode.SOFTMAX_CENTER)
    loss_fn.initialize(ctx=ctx)
    loss_fn.hybridize()
    trainers = make_trainers(net, loss_fn.center_loss, Mode.SOFTMAX_CENTER, lr=1e-4)
    net.hybridize(static_alloc=True, static_shape=True)
    loader, _ = get_dataloader(train, val, size, size, anchors, args.batch_size,
                               num_workers=args.num_workers, augment=True)
    device_loader, _ = get_dataloader(train, val, size, size, anchors, args.batch_size,
                                      num_workers=args.num_workers, augment=True,
                                      targets_ctx=ctx[0])
    held = list(itertools.islice(loader, args.iters))

    def loop(batches):
        def run_loop():
            train_epoch(net, loss_fn, *trainers, batches(), ctx, epoch=0)
            return args.batch_size * args.iters
        return run_loop
    speeds = time_rounds({
        'step alone (held batches)': loop(lambda: held),
        f'loop, -j {args.num_workers}, targets in workers': loop(
            lambda: itertools.islice(loader, args.iters)),
        f'loop, -j {args.num_workers}, targets here': loop(
            lambda: itertools.islice(device_loader, args.iters))}, args.rounds)
    for name, speed in speeds.items():
        print(f'  {name:<36} {speed:8.2f} img/s')
    step, *fed = speeds.values()
    for where, speed in zip(('in the workers', 'on the training device'), fed):
        print(f'  augmented loop / step alone, targets {where} = {speed / step:.3f}')
    return 0


def main(argv=None):
    p = parser('bench_loader.py', __doc__.splitlines()[0], iters=8)
    p.add_argument('-j', '--num-workers', type=nonnegative_int, default=2,
                   help='loader worker processes (default: 2)')
    args = p.parse_args(argv)
    return run(lambda: benchmark(args))


if __name__ == '__main__':
    program(main)
