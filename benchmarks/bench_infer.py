"""Inference speed, side by side in one run: GluonCV's SSD vs ours without and with embeddings.

The three networks share their backbone and box head (random, or a checkpoint's with
``--params``); the class heads differ by design (ours reads the embeddings, GluonCV's the
features), so GluonCV's keeps its random weights. Goal: ours with embeddings >= 0.95 of
GluonCV's.

    python benchmarks/bench_infer.py [--model M] [--batch-size 16] [--params CKPT] [--gpus 0]
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)
import os
import tempfile

import mxnet as mx
from mxnet import autograd

from common import build, compare, digit_batches, gluoncv_twin, parser
from gluon_ssdcl.commands.common import contexts, program, run
from gluon_ssdcl.data.datasets import get_val_transform
from gluon_ssdcl.engine.checkpoint import load_checkpoint, restore


def variant(net, batches, ctx, embeddings=None):
    if embeddings is not None:
        net.set_embeddings(infer=embeddings)
        net.hybridize(static_alloc=True, static_shape=True)

    def run():
        with autograd.predict_mode():
            for images in batches:
                outputs = net(images.as_in_context(ctx[0]))
            outputs[0].wait_to_read()
        return sum(images.shape[0] for images in batches)
    return run


def benchmark(args):
    """Time the three variants and print their speeds and ratios; returns 0."""
    ctx = contexts(args.gpus)
    ours, with_embeddings, gluoncv = (build(args.model, ctx), build(args.model, ctx),
                                      gluoncv_twin(args.model, ctx))
    if args.params:
        restore(load_checkpoint(args.params), ours, ctx=ctx)
    with tempfile.TemporaryDirectory() as folder:  # share the weights by structural name
        path = os.path.join(folder, 'weights.params')
        ours.save_parameters(path)
        with_embeddings.load_parameters(path, ctx=ctx)
        gluoncv.load_parameters(path, ctx=ctx, allow_missing=True, ignore_extra=True)
    size = ours.base_size
    transform = get_val_transform(size, size)
    batches = digit_batches(
        lambda train, val: mx.gluon.data.DataLoader(
            val.transform(lambda img, label: transform(img, label)[0]), args.batch_size,
            last_batch='discard'),
        args.iters, args.dataset_root)
    compare(f'inference, {args.model}, batch {args.batch_size}, {ctx}', {
        'GluonCV SSD': variant(gluoncv, batches, ctx),
        'ours, no embeddings': variant(ours, batches, ctx, embeddings=False),
        'ours, with embeddings': variant(with_embeddings, batches, ctx, embeddings=True),
    }, args.rounds, [(1, 0, 0.95), (2, 0, 0.95)])
    return 0


def main(argv=None):
    p = parser('bench_infer.py', __doc__.splitlines()[0])
    p.add_argument('--params', default=None, help='a checkpoint to take the weights from')
    args = p.parse_args(argv)
    return run(lambda: benchmark(args))


if __name__ == '__main__':
    program(main)
