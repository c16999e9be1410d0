"""Distance to the machine's limit: the float32 GEMM peak against a training step's GFLOP/s.

(a) A large matrix product (``--gemm-size`` square matrices, all cores) through MXNet's two
GEMMs, ``mx.nd.dot`` (the build's BLAS, OpenBLAS in the pip CPU build) and ``FullyConnected``
(oneDNN, which the convolutions use too); the faster is the peak. (b) GluonCV's SSD training
step (``train_ssd.py``'s, see ``bench_train.py``) and (c) ours in softmax-center mode, on the
same digit batches: their forward FLOPs counted from the layer shapes (every convolution and
dense layer: 2 x output elements x inputs per output), x3 for forward + backward, over the
step's time. Rounds are interleaved, so a machine shared with other work slows them alike;
the shares of the peak are printed.

    python benchmarks/bench_peak.py [--model ssd_300_vgg16_atrous_center_voc] [--batch-size 4]
        [--iters 2] [--rounds 3] [--gemm-size 4096]
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)
import json
from math import prod

import mxnet as mx
from bench_train import gluoncv_variant, our_variant

from common import build, digit_batches, gluoncv_twin, parser, time_rounds
from gluon_ssdcl.commands.common import contexts, positive_int, program, run
from gluon_ssdcl.evaluation.inference import positive_loader
from gluon_ssdcl.losses.multibox import Mode

BACKWARD_FACTOR = 3  # forward + backward (gradients of the inputs and of the weights)


def forward_flops(net, batch_size):
    """Forward FLOPs of ``net`` (a hybridizable SSD) on ``(batch_size, 3, S, S)`` images,
    ``S = net.base_size``, in training mode: for every convolution and dense layer,
    2 x its output elements x the inputs of one output (its weight's shape but the first
    axis: input channels per group x kernel, or input units); other layers are not counted.

    Returns
    -------
    int
    """
    with mx.autograd.train_mode():
        symbol = mx.sym.Group(list(net(mx.sym.var('data'))))
    internals = symbol.get_internals()
    arg_shapes, out_shapes, _ = internals.infer_shape(
        data=(batch_size, 3, net.base_size, net.base_size))
    shapes = dict(zip(internals.list_arguments(), arg_shapes))
    shapes.update(zip(internals.list_outputs(), out_shapes))
    nodes = json.loads(symbol.tojson())['nodes']
    total = 0
    for node in nodes:
        if node['op'] in ('Convolution', 'FullyConnected'):
            weight = shapes[nodes[node['inputs'][1][0]]['name']]
            total += 2 * prod(shapes[node['name'] + '_output']) * prod(weight[1:])
    return total


def gemm_variants(size, ctx):
    """``size x size`` float32 matrix products through MXNet's two GEMMs: ``mx.nd.dot`` (the
    build's BLAS) and ``FullyConnected`` (oneDNN's GEMM in MXNet's CPU build); each call
    returns its GFLOP (2 size^3)."""
    a = mx.nd.random.uniform(shape=(size, size), ctx=ctx[0])
    b = mx.nd.random.uniform(shape=(size, size), ctx=ctx[0])

    def product(op):
        def run():
            op().wait_to_read()
            return 2 * size ** 3 / 1e9
        return run
    return {f'GEMM {size}x{size}, mx.nd.dot (BLAS)': product(lambda: mx.nd.dot(a, b)),
            f'GEMM {size}x{size}, FullyConnected (oneDNN)': product(
                lambda: mx.nd.FullyConnected(a, b, no_bias=True, num_hidden=size))}


def step_variant(make, model, batches, ctx, gflop_per_image):
    """A training variant of ``bench_train`` whose count of images becomes GFLOP."""
    step = make(model, batches, ctx)

    def run():
        return step() * gflop_per_image
    return run


def benchmark(args):
    """Time GEMM and both training steps interleaved; print GFLOP/s and the shares; returns 0."""
    ctx = contexts(args.gpus)
    ours, theirs = build(args.model, ctx), gluoncv_twin(args.model, ctx)
    counted = {'ours': forward_flops(ours, 1), 'GluonCV': forward_flops(theirs, 1)}
    batches = digit_batches(lambda train, val: positive_loader(train, ours, args.batch_size),
                            args.iters, args.dataset_root)
    gemms = gemm_variants(args.gemm_size, ctx)
    variants = {
        **gemms,
        '(b) GluonCV SSD training step': step_variant(
            gluoncv_variant, args.model, batches, ctx, BACKWARD_FACTOR * counted['GluonCV'] / 1e9),
        '(c) ours, softmax-center training step': step_variant(
            lambda *a: our_variant(*a, Mode.SOFTMAX_CENTER), args.model, batches, ctx,
            BACKWARD_FACTOR * counted['ours'] / 1e9),
    }
    speeds = time_rounds(variants, args.rounds)
    print(f'peak, {args.model}, batch {args.batch_size}, {ctx}')
    print(f"  forward GFLOP per image: GluonCV {counted['GluonCV'] / 1e9:.2f}, "
          f"ours {counted['ours'] / 1e9:.2f} (x{BACKWARD_FACTOR} for a training step)")
    for name, speed in speeds.items():
        print(f'  {name:<48} {speed:9.3f} GFLOP/s')
    peak = max(gemms, key=speeds.get)
    print(f'  peak: {peak}')
    for name in list(speeds)[len(gemms):]:
        print(f'  {name} / peak = {speeds[name] / speeds[peak]:.3f}')
    return 0


def main(argv=None):
    p = parser('bench_peak.py', __doc__.splitlines()[0],
               model='ssd_300_vgg16_atrous_center_voc', batch_size=4, iters=2)
    p.add_argument('--gemm-size', type=positive_int, default=4096,
                   help='rows and columns of the GEMM matrices')
    args = p.parse_args(argv)
    return run(lambda: benchmark(args))


if __name__ == '__main__':
    program(main)
