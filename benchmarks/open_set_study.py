"""What the centers are for: softmax vs softmax + center models trained without some digit
classes, then evaluated on open-set rejection and few-shot registration of those classes.

    python benchmarks/open_set_study.py [--out runs/open_set_study] [--seeds 0,1,2]
        [--modes softmax,center] [--unknown 8,9] [--digits-train 7000] [--epochs 4]
        [--shots 1,5,20] [--draws 5] [--fine-tune] [--stages train,openset,fewshot] [--fast]
        [--dry-run]

The grid is every ``--modes`` setting (:data:`MODES`: softmax; softmax + center at λ 1 and
0.1; with the push-away hinge, and with the hard negatives pushed too) over every seed, at the
default run's budget. Each run is ``train_ssd_center.py --digits-exclude <unknown>`` in a
child process with
``--save-prefix <out>/<run>``; its ``<run>_eval.json`` marks it trained (an interrupted run is
continued with ``--resume``). Then, per run, ``python -m gluon_ssdcl.evaluate --open-set``
writes ``<run>_openset.json`` and ``python -m gluon_ssdcl.register --evaluate`` writes
``<run>_fewshot.json``; a stage whose JSON exists is skipped, so a second call only does what is
missing. Each run's stages run one after the other before the next run starts. After every step the
summary is rewritten: ``results.csv`` and ``results.json`` (one
row per run) and ``results.md`` (mean ± std over seeds per mode). ``--fast`` runs a two-run grid
on a tiny network in seconds (for the tests).
"""
import argparse
import os
import subprocess
import sys
import time
from collections import OrderedDict


from common import mean_std, read_json, write_json, write_rows
from gluon_ssdcl.commands.common import (OneLineErrorParser, UsageError, classes_flag, positive_int,
                                         program, run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'train_ssd_center.py')
STAGES = ('train', 'openset', 'fewshot')
CENTER = ['--center-loss', '--lmbd', '1', '--alpha', '0.5']
MODES = OrderedDict([('softmax', []),
                     ('center', CENTER),
                     ('lmbd01', ['--center-loss', '--lmbd', '0.1', '--alpha', '0.5']),
                     ('push', CENTER + ['--push-margin', '5']),
                     ('pushneg', CENTER + ['--push-margin', '5', '--push-negatives'])])
FAST_FLAGS = ['--network', 'tiny', '--data-shape', '64', '--digits-val', '16',
              '--batch-size', '8', '--embed-dim', '4', '--warmup-iters', '2', '--knn-k', '1']


def plan(args):
    """The grid: ``name -> (settings, training flags)``, every mode over every seed."""
    common = ['--digits-train', str(args.digits_train), '--epochs', str(args.epochs),
              '--digits-exclude', ','.join(map(str, args.unknown))]
    if args.fast:
        common += FAST_FLAGS + ['--dataset-root', os.path.join(args.out, 'digits')]
    grid = OrderedDict()
    for seed in args.seeds:  # both modes of a seed first: a grid stopped early stays paired
        for mode in args.modes:
            flags = MODES[mode]
            grid[f'{mode}_s{seed}'] = ({'mode': mode, 'seed': seed},
                                       common + flags + ['--seed', str(seed)])
    return grid


def _child(name, argv, out):
    """Run ``argv`` with its output appended to ``<out>/<name>_study.log``; returns minutes.
    RuntimeError on a failure."""
    start = time.time()
    with open(os.path.join(out, name + '_study.log'), 'a') as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               env=dict(os.environ, TQDM_DISABLE='1'))
    if code:
        raise RuntimeError(f"{name} failed (exit {code}): see {os.path.join(out, name)}"
                           "_study.log")
    return (time.time() - start) / 60


def stage_commands(name, flags, args):
    """``stage -> (output JSON, argv)`` of one run (the training's argv resumes when it can)."""
    prefix = os.path.join(args.out, name)
    unknown = ','.join(map(str, args.unknown))
    resume = os.path.exists(prefix + '_last.params')
    train = [sys.executable, TRAIN] + (['--resume', prefix] if resume else
                                       flags + ['--save-prefix', prefix])
    fast = ['--max-images', '16'] if args.fast else []
    openset = [sys.executable, '-m', 'gluon_ssdcl.evaluate', '--params', prefix, '--open-set',
               '--unknown-classes', unknown, '--output', prefix + '_openset.json'] + fast
    fewshot = [sys.executable, '-m', 'gluon_ssdcl.register', '--params', prefix, '--evaluate',
               '--classes', unknown, '--shots', ','.join(map(str, args.shots)),
               '--draws', str(args.draws), '--output', prefix + '_fewshot.json'] + fast + (
                   ['--fine-tune'] if args.fine_tune else [])
    if args.fast:
        fewshot += ['--examples-root', os.path.join(args.out, 'digits-full')]
    return OrderedDict([('train', (prefix + '_eval.json', train)),
                        ('openset', (prefix + '_openset.json', openset)),
                        ('fewshot', (prefix + '_fewshot.json', fewshot))])


def row(name, settings, out):
    """One result row: the settings, the minutes of each stage and the metrics found."""
    prefix = os.path.join(out, name)
    values = {'run': name, **settings}
    done = read_json(prefix + '_study.json') if os.path.exists(prefix + '_study.json') else {}
    values.update({f'minutes_{k}': v for k, v in done.items()})
    if os.path.exists(prefix + '_eval.json'):
        trained = read_json(prefix + '_eval.json')
        values.update({key: trained.get(key) for key in ('map', 'softmax_acc', 'knn_acc',
                                                          'center_acc')})
    if os.path.exists(prefix + '_openset.json'):
        values.update(read_json(prefix + '_openset.json').get('summary', {}))
    if os.path.exists(prefix + '_fewshot.json'):
        values.update(read_json(prefix + '_fewshot.json').get('summary', {}))
    return values


def summary_table(rows):
    """Markdown: one line per mode, mean ± std over its seeds of every numeric column."""
    groups = OrderedDict()
    for values in rows:
        groups.setdefault(values['mode'], []).append(values)
    keys = [k for k in OrderedDict((k, None) for values in rows for k in values)
            if k not in ('run', 'mode', 'seed')
            and all(isinstance(v.get(k), (int, float, type(None))) for v in rows)]
    lines = ['| ' + ' | '.join(['metric'] + [f'{mode} ({len(m)} seeds)'
                                             for mode, m in groups.items()]) + ' |',
             '|' + ' --- |' * (len(groups) + 1)]
    for key in keys:
        lines.append('| ' + ' | '.join([key] + [mean_std([m.get(key) for m in members])
                                                for members in groups.values()]) + ' |')
    return '\n'.join(lines) + '\n'


def study(args):
    """Run every missing stage of the grid, run by run (a run's evaluations right after its
    training, so that a grid stopped early leaves complete runs), rewriting the summary after
    each; returns 0, or 1 when an evaluation failed (the others still ran)."""
    grid = plan(args)
    os.makedirs(args.out, exist_ok=True)
    if args.dry_run:
        for name, (_, flags) in grid.items():
            for stage, (_, argv) in stage_commands(name, flags, args).items():
                if stage in args.stages:
                    print(name, stage, ' '.join(argv[1:]))
        return 0
    failed = []
    for name, (settings, flags) in grid.items():
        for stage in STAGES:
            commands = stage_commands(name, flags, args)
            output, argv = commands[stage]
            record = os.path.join(args.out, name + '_study.json')
            if stage not in args.stages or os.path.exists(output):
                continue
            if stage != 'train' and not os.path.exists(commands['train'][0]):
                continue  # not trained (the train stage was not asked for)
            print(f"{stage} {name}", flush=True)
            try:
                minutes = _child(name, argv, args.out)
            except RuntimeError as err:
                if stage == 'train':
                    raise
                print(f"error: {err}", file=sys.stderr, flush=True)
                failed.append(f'{stage} {name}')
                continue
            done = read_json(record) if os.path.exists(record) else {}
            write_json(record, {**done, stage: minutes})
            rows = [row(n, s, args.out) for n, (s, _) in grid.items()]
            write_rows(rows, summary_table(rows), args.out)
    rows = [row(n, s, args.out) for n, (s, _) in grid.items()]
    write_rows(rows, summary_table(rows), args.out)
    print(summary_table(rows))
    if failed:
        print(f"error: failed: {', '.join(failed)} (see their _study.log)", file=sys.stderr)
        return 1
    return 0


def _numbers(text):
    return [int(part) for part in text.split(',') if part.strip()]


def _modes(text):
    modes = [part.strip() for part in text.split(',') if part.strip()]
    bad = sorted(set(modes) - set(MODES))
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"unknown mode {', '.join(bad) or text!r} (choose "
                                         f"from {', '.join(MODES)})")
    return modes


def _stages(text):
    stages = [part.strip() for part in text.split(',') if part.strip()]
    bad = sorted(set(stages) - set(STAGES))
    if bad:
        raise UsageError(f"--stages: unknown stage {', '.join(bad)} (choose from "
                         f"{', '.join(STAGES)})")
    return stages


def main(argv=None):
    p = OneLineErrorParser(prog='open_set_study.py', description=__doc__.splitlines()[0])
    p.add_argument('--out', default=os.path.join('runs', 'open_set_study'),
                   help='folder of the runs and the summary (default: runs/open_set_study)')
    p.add_argument('--seeds', type=_numbers, default=[0, 1, 2])
    p.add_argument('--unknown', type=classes_flag, default=[8, 9],
                   help='digit classes held out of training (default: 8,9)')
    p.add_argument('--modes', type=_modes, default=['softmax', 'center'],
                   help=f"comma-separated training settings, of {', '.join(MODES)} "
                        "(default: softmax,center)")
    p.add_argument('--digits-train', type=positive_int, default=7000)
    p.add_argument('--epochs', type=positive_int, default=4)
    p.add_argument('--shots', type=_numbers, default=[1, 5, 20],
                   help='examples per registered class (default: 1,5,20)')
    p.add_argument('--draws', type=positive_int, default=5,
                   help='draws of the examples per K in the few-shot evaluation (default: 5)')
    p.add_argument('--fine-tune', action='store_true',
                   help='also measure few-shot registration by fine-tuning the class head '
                        '(register --evaluate --fine-tune)')
    p.add_argument('--stages', default=','.join(STAGES),
                   help=f"comma-separated stages to run (default: {','.join(STAGES)})")
    p.add_argument('--fast', action='store_true',
                   help='a two-run grid on a tiny network (seconds), for the tests')
    p.add_argument('--dry-run', action='store_true', help='list the commands')
    args = p.parse_args(argv)
    try:
        args.stages = _stages(args.stages)
    except UsageError as err:
        p.error(str(err))
    if args.fast:
        args.seeds, args.digits_train, args.epochs, args.shots, args.draws = \
            args.seeds[:1], 48, 1, [1], 1
    return run(lambda: study(args))


if __name__ == '__main__':
    program(main)
