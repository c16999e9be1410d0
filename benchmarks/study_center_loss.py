"""Does the center loss help the detector? A grid of training runs over modes, λ, α, seeds and
center-only second stages, summarised as mean ± std over seeds.

    python benchmarks/study_center_loss.py [--out runs/study] [--seeds 0,1,2] [--lmbd 0.1,1,10]
        [--stage2-lr 0.001,0.004] [--fast] [--dry-run] [--runs NAME,...]

Each run is ``train_ssd_center.py`` in a child process with ``--save-prefix <out>/<run>``; its
``<run>_eval.json`` (written by the command at its end) marks it done, so a second call skips
it (``<run>_study.json`` records its flags and minutes), and a run that was interrupted before
is continued with ``--resume``.
After every run the summary is rewritten: ``results.csv`` and ``results.json`` (one row per
run), ``results.md`` (mean ± std over seeds per setting) and ``results.png`` (mAP and k-NN
accuracy against λ, with error bars). ``--fast`` runs a two-run grid on a tiny network in
seconds (for the tests).
"""
import os
import statistics
import subprocess
import sys
import time
from collections import OrderedDict


from common import mean_std, read_json, write_json, write_rows
from gluon_ssdcl.commands.common import (OneLineErrorParser, UsageError, positive_float,
                                         positive_int, program, run)
from gluon_ssdcl.utils.files import atomic_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'train_ssd_center.py')
# the eval JSON keys that make a row (besides the run's settings and minutes)
METRICS = ('map', 'softmax_acc', 'knn_acc', 'center_acc', 'knn_map', 'compactness_ratio',
           'center_compactness_ratio', 'confusion_softmax', 'confusion_knn', 'confusion_center')
SETTINGS = ('stage', 'mode', 'lmbd', 'alpha', 'centers', 'lr')
FAST_FLAGS = ['--network', 'tiny', '--data-shape', '64', '--digits-train', '32',
              '--digits-val', '16', '--batch-size', '8', '--epochs', '1', '--embed-dim', '2',
              '--warmup-iters', '2', '--knn-k', '1']


def plan(args):
    """The grid: an ordered dict ``name -> (settings dict, flags)``; second stages after the
    runs they start from."""
    grid = OrderedDict()
    common = FAST_FLAGS + ['--dataset-root', os.path.join(args.out, 'digits')] if args.fast \
        else []
    for lmbd in [None] + list(args.lmbd):  # softmax and the first λ over every seed first
        for seed in args.seeds:
            if lmbd is None:
                grid[f'softmax_s{seed}'] = (
                    {'stage': 1, 'mode': 'softmax', 'lmbd': None, 'alpha': None,
                     'centers': None, 'lr': None, 'seed': seed}, common + ['--seed', str(seed)])
                continue
            grid[f'center_l{lmbd:g}_s{seed}'] = (
                {'stage': 1, 'mode': 'softmax-center', 'lmbd': lmbd, 'alpha': args.alpha,
                 'centers': 'trained', 'lr': None, 'seed': seed},
                common + ['--seed', str(seed), '--center-loss', '--lmbd', str(lmbd),
                          '--alpha', str(args.alpha)])
    for seed in args.seeds if args.stage2_lr else ():
        first = f'center_l{args.lmbd[0]:g}_s{seed}'
        for lr in args.stage2_lr:  # the centers of the first stage stay fixed (Mode)
            grid[f'{first}_stage2_frozen_lr{lr:g}'] = (
                {'stage': 2, 'mode': 'center', 'lmbd': args.lmbd[0], 'alpha': args.alpha,
                 'centers': 'frozen', 'lr': lr, 'seed': seed},
                common + ['--seed', str(seed), '--center-only', '--lmbd', str(args.lmbd[0]),
                          '--alpha', str(args.alpha), '--lr', str(lr), '--warmup-iters', '0',
                          '--epochs', str(args.stage2_epochs), '--init-from',
                          os.path.join(args.out, first + '_last.params')])
    return grid


def train(name, flags, out):
    """Run (or continue) one training run; returns its minutes. RuntimeError on a failure."""
    prefix = os.path.join(out, name)
    resume = os.path.exists(prefix + '_last.params')
    argv = [sys.executable, TRAIN] + (['--resume', prefix] if resume else flags + [
        '--save-prefix', prefix])
    print(f"{'continuing' if resume else 'running'} {name}", flush=True)
    start = time.time()
    with open(prefix + '_study.log', 'a') as log:
        code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               env=dict(os.environ, TQDM_DISABLE='1'))
    if code:
        raise RuntimeError(f"{name} failed (exit {code}): see {prefix}_study.log")
    return (time.time() - start) / 60


def row(name, settings, out):
    """One result row: the settings, the minutes and the eval JSON's metrics and per-class APs."""
    results = read_json(os.path.join(out, name + '_eval.json'))
    done = read_json(os.path.join(out, name + '_study.json'))
    values = {'run': name, **settings, 'minutes': done['minutes']}
    values.update({key: results.get(key) for key in METRICS})
    values.update({f'ap_{c}': ap for c, ap in results['map_per_class'].items()})
    return values


def summary_table(rows):
    """Markdown: one line per setting, mean ± std over its seeds of each metric."""
    groups = OrderedDict()
    for values in rows:
        groups.setdefault(tuple(values[k] for k in SETTINGS), []).append(values)
    header = ['stage', 'mode', 'λ', 'α', 'centers', 'lr', 'seeds'] + list(METRICS) + ['minutes']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for key, members in groups.items():
        cells = ['–' if v is None else str(v) for v in key] + [str(len(members))]
        cells += [mean_std([m[k] for m in members]) for k in METRICS + ('minutes',)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def plot(rows, path):
    """mAP and k-NN accuracy against λ (stage 1), mean ± std over seeds; softmax as a band."""
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    fig = Figure(figsize=(8, 3.2))
    for ax, key, title in zip(fig.subplots(1, 2), ('map', 'knn_acc'), ('mAP', 'k-NN accuracy')):
        centered = [r for r in rows if r['stage'] == 1 and r['mode'] == 'softmax-center']
        lmbds = sorted({r['lmbd'] for r in centered})
        stats = [[r[key] for r in centered if r['lmbd'] == lmbd and r[key] is not None]
                 for lmbd in lmbds]
        kept = [(lmbd, v) for lmbd, v in zip(lmbds, stats) if v]
        if kept:
            ax.errorbar([k for k, _ in kept], [statistics.mean(v) for _, v in kept],
                        yerr=[statistics.stdev(v) if len(v) > 1 else 0 for _, v in kept],
                        marker='o', capsize=3, label='softmax + center')
        base = [r[key] for r in rows if r['mode'] == 'softmax' and r[key] is not None]
        if base:
            mean = statistics.mean(base)
            std = statistics.stdev(base) if len(base) > 1 else 0
            ax.axhspan(mean - std, mean + std, alpha=0.2, color='grey', label='softmax')
        ax.set_xscale('log')
        ax.set_xlabel('λ')
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize='small')
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=90)


def write_summary(rows, out):
    """results.csv, results.json, results.md and results.png in ``out``."""
    write_rows(rows, summary_table(rows), out)
    plot(rows, os.path.join(out, 'results.png'))


def study(args):
    """Run every run of the grid not yet done, rewriting the summary after each; returns 0."""
    grid = plan(args)
    os.makedirs(args.out, exist_ok=True)
    if args.dry_run:
        for name, (_, flags) in grid.items():
            print(name, ' '.join(flags))
        return 0
    unknown = sorted(set(args.runs or ()) - set(grid))
    if unknown:
        raise UsageError(f"--runs: not in the grid: {', '.join(unknown)}")
    rows = []
    for name, (settings, flags) in grid.items():
        prefix = os.path.join(args.out, name)
        if args.runs is not None and name not in args.runs:
            if os.path.exists(prefix + '_study.json'):
                rows.append(row(name, settings, args.out))
            continue
        if not os.path.exists(prefix + '_study.json'):
            # a run stopped after it wrote its results (the command's last step) is done;
            # its minutes were not recorded
            finished = os.path.exists(prefix + '_eval.json')
            minutes = None if finished else train(name, flags, args.out)
            write_json(prefix + '_study.json', {'flags': flags, 'minutes': minutes})
        rows.append(row(name, settings, args.out))
        write_summary(rows, args.out)
    if rows:
        write_summary(rows, args.out)
    print(summary_table(rows))
    return 0


def _numbers(kind):
    def parse(text):
        return [kind(part) for part in text.split(',') if part.strip()]
    return parse


def main(argv=None):
    p = OneLineErrorParser(prog='study_center_loss.py', description=__doc__.splitlines()[0])
    p.add_argument('--out', default=os.path.join('runs', 'study'),
                   help='folder of the runs and the summary (default: runs/study)')
    p.add_argument('--seeds', type=_numbers(int), default=[0, 1, 2])
    p.add_argument('--lmbd', type=_numbers(positive_float), default=[1.0, 0.1, 10.0],
                   help='λ of the softmax+center runs; second stages start from the first')
    p.add_argument('--alpha', type=positive_float, default=0.5)
    p.add_argument('--stage2-lr', type=_numbers(positive_float), default=[0.001, 0.004],
                   help="center-only stages' learning rates ('' for none)")
    p.add_argument('--stage2-epochs', type=positive_int, default=3)
    p.add_argument('--fast', action='store_true',
                   help='a two-run grid on a tiny network (seconds), for the tests')
    p.add_argument('--dry-run', action='store_true', help='list the runs and their flags')
    p.add_argument('--runs', type=lambda text: text.split(','), default=None,
                   help='comma-separated run names (see --dry-run): run only these, in the '
                        "grid's order; the summary keeps the other finished runs")
    args = p.parse_args(argv)
    if args.fast:
        args.seeds, args.lmbd, args.stage2_lr = args.seeds[:1], args.lmbd[:1], []
    return run(lambda: study(args))


if __name__ == '__main__':
    program(main)
