"""Shared parts of the benchmarks: flags, real digit batches, interleaved timing, the report."""
import itertools
import os
import statistics
import time

os.environ.setdefault('TQDM_DISABLE', '1')  # the training loop's progress bars

import mxnet as mx  # noqa: E402  (gluon_ssdcl sets OMP_NUM_THREADS before MXNet is imported)

from gluon_ssdcl import get_model, initialize_params  # noqa: E402
from gluon_ssdcl.cli_tools import OneLineErrorParser, add_gpus_flag, positive_int  # noqa: E402
from gluon_ssdcl.data.datasets import get_dataset  # noqa: E402
from gluon_ssdcl.data.digits import ensure_digits  # noqa: E402


def parser(prog, description):
    """Flags every benchmark takes (bad ones: one line, exit 2)."""
    p = OneLineErrorParser(prog=prog, description=description)
    p.add_argument('--model', default='ssd_256_small_center_digits')
    p.add_argument('--batch-size', type=positive_int, default=16)
    p.add_argument('--iters', type=positive_int, default=20, help='batches per timed round')
    p.add_argument('--rounds', type=positive_int, default=3,
                   help='timed rounds per variant (median)')
    add_gpus_flag(p)
    p.add_argument('--dataset-root', default=None, help='digits data set folder')
    return p


def build(model, ctx, embed_dim=16):
    """An initialised, hybridized network (``embed_dim=None``: GluonCV's plain SSD twin)."""
    net = get_model(model, embed_dim=embed_dim)
    initialize_params(net, ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def digit_batches(loader_of, num_batches, root=None):
    """The first ``num_batches`` batches of ``loader_of(train_dataset, val_dataset)``, held:
    of the digits data set at ``root``, by default the one of the default run."""
    train, val = get_dataset('digits', root or ensure_digits())
    return list(itertools.islice(loader_of(train, val), num_batches))


def time_rounds(variants, rounds):
    """Run each ``name -> fn() -> images`` once to warm up, then ``rounds`` times interleaved.

    Returns ``{name: median images/s}``.
    """
    for fn in variants.values():
        fn()
    speeds = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            mx.nd.waitall()
            start = time.perf_counter()
            images = fn()
            mx.nd.waitall()
            speeds[name].append(images / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in speeds.items()}


def compare(title, variants, rounds, goals):
    """Time ``variants`` (see :func:`time_rounds`), print images/s of each and the ratio of
    each ``(numerator index, denominator index, goal)`` of ``goals``."""
    speeds = time_rounds(variants, rounds)
    names = list(speeds)
    print(title)
    for name, speed in speeds.items():
        print(f'  {name:<36} {speed:8.1f} img/s')
    for numerator, denominator, goal in goals:
        ratio = speeds[names[numerator]] / speeds[names[denominator]]
        verdict = 'meets' if ratio >= goal else 'MISSES'
        print(f'  {names[numerator]} / {names[denominator]} = {ratio:.3f}  '
              f'({verdict} the goal >= {goal})')


def mean_std(values, digits=3):
    """``'mean ± std'`` of the values that are not None (std 0 for one value; '–' for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return '–'
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.{digits}f} ± {std:.{digits}f}'
