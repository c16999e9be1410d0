"""A worker of the tests' distributed jobs, started by ``python -m gluon_ssdcl.launch``.

    dist_worker.py step OUT          one step of the tiny network on 8 toy images (4 a worker,
                                     dist_sync) in each mode MODE of MODES, its parameters to
                                     OUT/<MODE>_rank<r>.npz
    dist_worker.py cli OUT ARGS...   train_ssd_center.py's main(ARGS); the parameters it trained
                                     to OUT/rank<r>.npz
    dist_worker.py wait              sums over the workers until stopped (a job to kill)

``toy_run`` and ``parameters`` also give the tests their one-process reference.
"""
import os
import sys

import mxnet as mx
import numpy as np

STEP_IMAGES = 8
MODES = ('softmax', 'softmax-center', 'center')


def toy_run(mode, ctx, batch_size, shard=(0, 1), workers=None):
    """A tiny net (seeded), its loss and the training loader of ``STEP_IMAGES`` toy images."""
    from test_train import toy_dataset

    from gluon_ssdcl import MultiBoxCenterLoss, get_model, initialize_params
    from gluon_ssdcl.data.datasets import get_dataloader
    from gluon_ssdcl.engine.train import set_seed
    set_seed(0)
    net = get_model('ssd_64_tiny_center_custom', classes=['a', 'b', 'c'], embed_dim=2)
    initialize_params(net, ctx)
    anchors = net.anchor_outputs(mx.nd.zeros((1, 3, 64, 64), ctx=ctx[0]))[2]
    images = toy_dataset(STEP_IMAGES, seed=1)
    loader, _ = get_dataloader(images, images, 64, 64, anchors, batch_size, augment=False,
                               shard=shard)
    loss_fn = MultiBoxCenterLoss(3, 2, mode=mode, sum_counts=workers.sum if workers else None)
    loss_fn.initialize(mx.init.Normal(1.0), ctx=ctx)
    return net, loss_fn, loader


def step_config(mode, prefix):
    from gluon_ssdcl.engine.train import TrainConfig

    # a constant rate: the only update of a one-step cosine schedule would have rate 0
    return TrainConfig(mode=mode, epochs=1, lr=0.1, lr_mode='step', warmup_iters=0,
                       save_prefix=prefix,
                       meta={'network': 'ssd_64_tiny_center_custom', 'classes': ['a', 'b', 'c'],
                             'embed_dim': 2})


def parameters(net, center_loss):
    """name -> the mean of its copies on the devices (NumPy), centers included."""
    blocks = {'': net, 'centers ': center_loss}
    return {prefix + name: np.mean([a.asnumpy() for a in param.list_data()], axis=0)
            # pylint: disable-next=protected-access
            for prefix, block in blocks.items()
            for name, param in block._collect_params_with_prefix().items()}


def save(path, arrays):
    np.savez(path, **arrays)


def step(out):
    """One ``fit`` of one step in each of ``MODES``, in one job."""
    from gluon_ssdcl.engine.distributed import Workers
    from gluon_ssdcl.engine.train import fit
    workers = Workers('dist_sync')
    for mode in MODES:
        net, loss_fn, loader = toy_run(mode, [mx.cpu()], STEP_IMAGES // workers.size,
                                       (workers.rank, workers.size), workers)
        fit(net, loss_fn, loader, [mx.cpu()], step_config(mode, os.path.join(out, mode)),
            workers=workers)
        save(os.path.join(out, f'{mode}_rank{workers.rank}.npz'),
             parameters(net, loss_fn.center_loss))
    return 0


def cli(out, argv):
    """``cli.main(argv)``, keeping what ``fit`` trained: rank 0 alone saves it to files."""
    from gluon_ssdcl.commands import train as train_cli
    trained = {}
    fit = train_cli.fit

    def keep(net, loss_fn, *args, **kwargs):
        result = fit(net, loss_fn, *args, **kwargs)
        trained.update(parameters(net, loss_fn.center_loss))
        save(os.path.join(out, f"rank{kwargs['workers'].rank}.npz"), trained)
        return result
    train_cli.fit = keep
    return train_cli.main(argv)


def wait():
    from gluon_ssdcl.engine.distributed import Workers
    workers = Workers('dist_sync')
    print(f'worker {workers.rank} summing', flush=True)
    while True:
        workers.barrier()


if __name__ == '__main__':
    from gluon_ssdcl.commands.train import run_worker
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if sys.argv[1] == 'step':
        sys.exit(run_worker(lambda: step(sys.argv[2])))
    elif sys.argv[1] == 'cli':
        sys.exit(cli(sys.argv[2], sys.argv[3:]))
    else:
        wait()
