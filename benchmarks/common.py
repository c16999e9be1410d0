"""Shared parts of the benchmarks: flags, real digit batches, interleaved timing, the report."""
import csv
import itertools
import json
import os
import statistics
import time
from collections import OrderedDict

os.environ.setdefault('TQDM_DISABLE', '1')  # the training loop's progress bars

# gluon_ssdcl sets OMP_NUM_THREADS before MXNet is loaded (with MXNet first, its own operators
# run on half the cores): the benchmarks import this module before MXNet
from gluon_ssdcl import get_model, initialize_params, list_models  # noqa: E402  isort: skip

import gluoncv  # noqa: E402
import mxnet as mx  # noqa: E402

from gluon_ssdcl.commands.common import (OneLineErrorParser, add_gpus_flag,  # noqa: E402
                                         positive_int)
from gluon_ssdcl.data.datasets import get_dataset  # noqa: E402
from gluon_ssdcl.data.digitset import ensure_digits  # noqa: E402
from gluon_ssdcl.utils.files import atomic_path  # noqa: E402


def parser(prog, description, model='ssd_256_small_center_digits', batch_size=16, iters=20):
    """Flags every benchmark takes (bad ones: one line, exit 2), with the script's defaults."""
    p = OneLineErrorParser(prog=prog, description=description)
    p.add_argument('--model', default=model, type=model_name,
                   help=f'one of ours ({", ".join(list_models())})')
    p.add_argument('--batch-size', type=positive_int, default=batch_size)
    p.add_argument('--iters', type=positive_int, default=iters, help='batches per timed round')
    p.add_argument('--rounds', type=positive_int, default=3,
                   help='timed rounds per variant (median)')
    add_gpus_flag(p)
    p.add_argument('--dataset-root', default=None, help='digits data set folder')
    return p


def model_name(name):
    """``--model``: one of our registered networks (an unknown name is a usage error)."""
    if name.lower() not in list_models():
        raise ValueError(f'unknown model {name!r}')
    return name.lower()


def _hybridized(net, ctx):
    initialize_params(net, ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def build(model, ctx, embed_dim=16):
    """Our network ``model``, initialised (random weights, no pretrained base) and hybridized
    with ``static_alloc`` and ``static_shape`` (``embed_dim=None``: GluonCV's plain SSD with our
    anchors)."""
    return _hybridized(get_model(model, embed_dim=embed_dim), ctx)


def gluoncv_twin(model, ctx):
    """GluonCV's network of our ``model``: GluonCV's model-zoo SSD of the same name without
    ``_center`` (``ssd_300_vgg16_atrous_center_voc`` -> ``ssd_300_vgg16_atrous_voc``, no
    pretrained base) where GluonCV has one, else GluonCV's plain SSD with our anchors (the
    digits networks); initialised and hybridized with ``static_alloc`` as GluonCV's
    ``train_ssd.py`` does."""
    name = model.replace('_center_', '_')
    if name not in gluoncv.model_zoo.get_model_list():
        return build(model, ctx, embed_dim=None)
    net = gluoncv.model_zoo.get_model(name, pretrained_base=False)
    net.base_size = int(name.split('_')[1])  # ssd_<size>_...; GluonCV's SSD does not keep it
    return _hybridized(net, ctx)


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
        print(f'  {name:<36} {speed:8.{1 if speed >= 10 else 3}f} img/s')
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


def read_json(path):
    """The JSON value stored in ``path``."""
    with open(path) as f:
        return json.load(f)


def write_json(path, data):
    """``data`` as JSON in ``path``, written atomically (a study's records and summaries)."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(data, f, indent=1)


def write_rows(rows, table, out):
    """A study's rows (dicts) as results.json and results.csv, and its Markdown ``table`` as
    results.md, in the folder ``out``, each written atomically."""
    write_json(os.path.join(out, 'results.json'), rows)
    columns = list(OrderedDict((k, None) for values in rows for k in values))
    with atomic_path(os.path.join(out, 'results.csv')) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
    with atomic_path(os.path.join(out, 'results.md')) as tmp:
        with open(tmp, 'w') as f:
            f.write(table)
