"""Training speed, side by side in one run, on the same network, batch, data and context.

(a) GluonCV's SSD with ``SSDMultiBoxLoss``, stepped as GluonCV's ``train_ssd.py`` does it;
(b) our softmax mode; (c) our softmax-center mode, both through ``gluon_ssdcl.engine.train``'s loop.
Goals: (b)/(a) >= 1.0 and (c)/(b) >= 0.95.

    python benchmarks/bench_train.py [--model M] [--batch-size 16] [--gpus 0]
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)
import mxnet as mx
from gluoncv.loss import SSDMultiBoxLoss
from mxnet import autograd, gluon

from common import build, compare, digit_batches, gluoncv_twin, parser
from gluon_ssdcl.commands.common import contexts, program, run
from gluon_ssdcl.engine.train import make_trainers, train_epoch
from gluon_ssdcl.evaluation.inference import positive_loader
from gluon_ssdcl.losses.multibox import Mode, MultiBoxCenterLoss

SGD = {'learning_rate': 1e-4, 'momentum': 0.9, 'wd': 5e-4}


def gluoncv_variant(model, batches, ctx):
    """GluonCV's train_ssd.py step: forward, SSDMultiBoxLoss, backward, step, loss metrics."""
    net = gluoncv_twin(model, ctx)
    loss_fn = SSDMultiBoxLoss()
    trainer = gluon.Trainer(net.collect_params(), 'sgd', SGD)
    ce_metric, smoothl1_metric = mx.metric.Loss('CrossEntropy'), mx.metric.Loss('SmoothL1')

    def run():
        for batch in batches:
            data, cls_targets, box_targets = [
                gluon.utils.split_and_load(part, ctx, even_split=False) for part in batch]
            with autograd.record():
                cls_preds, box_preds = zip(*[net(x)[:2] for x in data])
                sum_loss, cls_loss, box_loss = loss_fn(cls_preds, box_preds, cls_targets,
                                                       box_targets)
                autograd.backward(sum_loss)
            trainer.step(1)
            ce_metric.update(0, [loss * batch[0].shape[0] for loss in cls_loss])
            smoothl1_metric.update(0, [loss * batch[0].shape[0] for loss in box_loss])
        return sum(batch[0].shape[0] for batch in batches)
    return run


def our_variant(model, batches, ctx, mode):
    """Our loop (``train_epoch``) in ``mode``, with the same SGD settings."""
    net = build(model, ctx)
    loss_fn = MultiBoxCenterLoss(len(net.classes), net.embed_dim, mode)
    loss_fn.initialize(ctx=ctx)
    loss_fn.hybridize()
    net_trainer, center_trainer = make_trainers(net, loss_fn.center_loss, mode, **{
        'lr': SGD['learning_rate'], 'momentum': SGD['momentum'], 'wd': SGD['wd']})
    net.hybridize(static_alloc=True, static_shape=True)

    def run():
        train_epoch(net, loss_fn, net_trainer, center_trainer, batches, ctx, epoch=0)
        return sum(batch[0].shape[0] for batch in batches)
    return run


def benchmark(args):
    """Time the three variants and print their speeds and ratios; returns 0."""
    ctx = contexts(args.gpus)
    probe = build(args.model, ctx)
    batches = digit_batches(lambda train, val: positive_loader(train, probe, args.batch_size),
                            args.iters, args.dataset_root)
    compare(f'training, {args.model}, batch {args.batch_size}, {ctx}', {
        '(a) GluonCV SSD + SSDMultiBoxLoss': gluoncv_variant(args.model, batches, ctx),
        '(b) ours, softmax': our_variant(args.model, batches, ctx, Mode.SOFTMAX),
        '(c) ours, softmax-center': our_variant(args.model, batches, ctx, Mode.SOFTMAX_CENTER),
    }, args.rounds, [(1, 0, 1.0), (2, 1, 0.95)])
    return 0


def main(argv=None):
    args = parser('bench_train.py', __doc__.splitlines()[0]).parse_args(argv)
    return run(lambda: benchmark(args))


if __name__ == '__main__':
    program(main)
