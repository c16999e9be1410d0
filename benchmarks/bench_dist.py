"""Distributed training on this machine (MXNet's parameter server, python -m gluon_ssdcl.launch).

(a) The time of one step's gradient push and pull (every trainable array of a network, summed
over 2 workers by the servers, as ``gluon.Trainer`` does it) through 1 and 2 servers, for each
of ``--pushpull-models`` (initialised, no training); with the arrays' size, for estimates of
other networks. (b) Training throughput of 2 workers with ``--batch-size`` B each against one
process with 2·B, on the same digit batches (``--model``, softmax-center mode); the process gets
the machine's OpenMP threads, each worker its share.

    python benchmarks/bench_dist.py [--model M] [--batch-size 16] [--iters 20] [--rounds 3]
        [--pushpull-models M1,M2] [--servers 1,2] [--pushpull-iters 5]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import mxnet as mx
from common import parser as common_parser
from common import time_rounds
from mxnet import gluon

from common import build, digit_batches
from gluon_ssdcl.commands.common import CommandError, contexts, positive_int, program, run
from gluon_ssdcl.commands.train import run_worker
from gluon_ssdcl.engine.distributed import Workers
from gluon_ssdcl.engine.train import make_trainers, train_epoch
from gluon_ssdcl.evaluation.inference import positive_loader
from gluon_ssdcl.losses.multibox import Mode, MultiBoxCenterLoss
from gluon_ssdcl.utils.cpus import available_cpus

WORKERS = 2
MODE = Mode.SOFTMAX_CENTER
SGD = {'lr': 1e-4, 'momentum': 0.9, 'wd': 5e-4}
PUSHPULL_MODELS = 'ssd_256_small_center_digits,ssd_300_vgg16_atrous_center_voc'


def parser():
    p = common_parser('bench_dist.py', __doc__.splitlines()[0])
    p.add_argument('--pushpull-models', default=PUSHPULL_MODELS,
                   help='comma-separated networks whose gradients (a) pushes and pulls')
    p.add_argument('--servers', default='1,2', help='comma-separated server counts for (a)')
    p.add_argument('--pushpull-iters', type=positive_int, default=5,
                   help='(a): steps per timed round (median of --rounds)')
    p.add_argument('--worker', choices=('pushpull', 'train'), default=None,
                   help='internal: run as a worker of a launched job')
    p.add_argument('--out', default=None, help='internal: where rank 0 writes its measure')
    return p


def trainable(net):
    return {name: p for name, p in net.collect_params().items() if p.grad_req != 'null'}


def median_seconds(step, rounds, repeat):
    """Median over ``rounds`` of the seconds of ``repeat`` calls of ``step()`` (one warm-up)."""
    step()
    mx.nd.waitall()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            step()
        mx.nd.waitall()
        times.append((time.perf_counter() - start) / repeat)
    return statistics.median(times)


def pushpull_worker(args, workers):
    """(a) in a worker: {'arrays', 'bytes', 'step_s'} of one gradient push and pull."""
    net = build(args.model, contexts(args.gpus)[:1])
    params = trainable(net)
    trainer = gluon.Trainer(params, 'sgd', {'learning_rate': 0.0},
                            kvstore=workers.trainer_store())
    for param in params.values():
        param.grad()[:] = 1.0
    seconds = median_seconds(trainer.allreduce_grads, args.rounds, args.pushpull_iters)
    return {'arrays': len(params), 'bytes': sum(p.data().size * 4 for p in params.values()),
            'step_s': seconds}


def batches_of(args, size):
    probe = build(args.model, [mx.cpu()])  # its anchors, for the targets
    return digit_batches(lambda train, val: positive_loader(train, probe, size), args.iters,
                         args.dataset_root)


def training(args, batches, workers=None):
    """Our loop over ``batches`` (softmax-center), for :func:`time_rounds`."""
    ctx = contexts(args.gpus)
    net = build(args.model, ctx)
    loss_fn = MultiBoxCenterLoss(len(net.classes), net.embed_dim, MODE,
                                 sum_counts=workers.sum if workers else None)
    loss_fn.initialize(ctx=ctx)
    loss_fn.hybridize()
    trainers = make_trainers(net, loss_fn.center_loss, MODE, **SGD,
                             kvstore=workers if workers else 'device')

    def one_pass():
        train_epoch(net, loss_fn, *trainers, batches, ctx, epoch=0)
        return sum(batch[0].shape[0] for batch in batches) * (workers.size if workers else 1)
    return one_pass


def train_worker(args, workers):
    """(b) in a worker: {'images_s'} of the job, each worker on its part of every batch."""
    size = args.batch_size
    mine = [[part[workers.rank * size:(workers.rank + 1) * size] for part in batch]
            for batch in batches_of(args, size * workers.size)]
    return {'images_s': time_rounds({'job': training(args, mine, workers)}, args.rounds)['job']}


def in_job(args):
    """Run as a worker of a launched job; rank 0 writes its measure to ``--out``."""
    workers = Workers('dist_sync')
    measure = (pushpull_worker if args.worker == 'pushpull' else train_worker)(args, workers)
    if workers.rank == 0:
        with open(args.out, 'w') as f:
            json.dump(measure, f)
    return 0


def job(args, worker, servers, threads, folder):
    """Launch 2 workers (``--worker worker``) and ``servers`` servers; rank 0's measure."""
    out = os.path.join(folder, f'{worker}_{servers}.json')
    flags = ['--worker', worker, '--out', out, '--model', args.model, '--batch-size',
             str(args.batch_size), '--iters', str(args.iters), '--rounds', str(args.rounds),
             '--pushpull-iters', str(args.pushpull_iters)]
    if args.dataset_root:
        flags += ['--dataset-root', args.dataset_root]
    if args.gpus:
        flags += ['--gpus', ','.join(map(str, args.gpus))]
    proc = subprocess.run(
        [sys.executable, '-m', 'gluon_ssdcl.launch', '-n', str(WORKERS), '-s', str(servers),
         '--', sys.executable, os.path.abspath(__file__), *flags],
        env=dict(os.environ, OMP_NUM_THREADS=str(threads)), capture_output=True, text=True)
    if proc.returncode:
        raise CommandError(f"the {worker} job failed: {proc.stderr.strip().splitlines()[-1]}")
    with open(out) as f:
        return json.load(f)


def benchmark(args):
    """Print (a) per network and server count, and (b) with its ratio; returns 0."""
    contexts(args.gpus)  # fail here when a GPU is missing
    servers = [int(s) for s in args.servers.split(',') if s.strip()]
    threads = int(os.environ.get('OMP_NUM_THREADS', available_cpus()))
    worker_threads = max(1, threads // WORKERS)
    with tempfile.TemporaryDirectory() as folder:
        print(f'gradient push and pull of one step, {WORKERS} workers on this machine')
        for model in args.pushpull_models.split(','):
            for count in servers:
                measure = job(argparse.Namespace(**{**vars(args), 'model': model}),
                              'pushpull', count, worker_threads, folder)
                megabytes = measure['bytes'] / 2**20
                print(f"  {model:<36} {measure['arrays']:4d} arrays {megabytes:8.1f} MiB  "
                      f"{count} server(s)  {measure['step_s'] * 1000:8.1f} ms/step  "
                      f"{2 * megabytes / measure['step_s']:8.1f} MiB/s a worker")
        alone = time_rounds({'alone': training(args, batches_of(args, WORKERS *
                                                                args.batch_size))},
                            args.rounds)['alone']
        together = job(args, 'train', 1, worker_threads, folder)['images_s']
    print(f'training, {args.model}, {MODE.value}, total batch {WORKERS * args.batch_size}')
    print(f'  {"1 process, " + str(threads) + " threads":<36} {alone:8.1f} img/s')
    print(f'  {f"{WORKERS} workers x {worker_threads} threads, 1 server":<36} '
          f'{together:8.1f} img/s')
    print(f'  {WORKERS} workers / 1 process = {together / alone:.3f}')
    return 0


def main(argv=None):
    args = parser().parse_args(argv)
    if args.worker:
        return run_worker(lambda: in_job(args))
    return run(lambda: benchmark(args))


if __name__ == '__main__':
    program(main)
