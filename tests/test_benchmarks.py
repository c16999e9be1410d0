"""The benchmark scripts run (tiny network, one round) and print their ratios."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    from gluon_ssdcl.data.digitset import ensure_digits
    return ensure_digits(str(tmp_path_factory.mktemp('digits')), num_train=8, num_val=8,
                         progress=False)


@pytest.mark.parametrize('script, ratios', [('bench_train.py', 2), ('bench_infer.py', 2)])
def test_benchmark_prints_its_ratios(digits_root, script, ratios):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', script), '--model',
         'ssd_64_tiny_center_digits', '--batch-size', '4', '--iters', '2', '--rounds', '1',
         '--dataset-root', digits_root], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    speeds = re.findall(r'^  .+? +([0-9.]+) img/s$', proc.stdout, re.M)
    assert len(speeds) == 3 and all(float(s) > 0 for s in speeds)
    assert len(re.findall(r' = [0-9.]+ +\((meets|MISSES) the goal', proc.stdout)) == ratios


def test_bench_peak_prints_gflops_and_the_shares_of_the_peak(digits_root):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'bench_peak.py'), '--model',
         'ssd_64_tiny_center_digits', '--batch-size', '2', '--iters', '1', '--rounds', '1',
         '--gemm-size', '128', '--dataset-root', digits_root],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    speeds = re.findall(r'^  .+? +([0-9.]+) GFLOP/s$', proc.stdout, re.M)
    assert len(speeds) == 4 and all(float(s) > 0 for s in speeds)
    assert re.search(r'^  peak: GEMM .+$', proc.stdout, re.M)
    assert len(re.findall(r'^  \(.\) .+ / peak = [0-9.]+$', proc.stdout, re.M)) == 2


def test_bench_loader_prints_costs_and_the_loop_ratio(digits_root):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'bench_loader.py'), '--model',
         'ssd_64_tiny_center_digits', '--batch-size', '2', '--iters', '2', '--rounds', '1',
         '-j', '0', '--dataset-root', digits_root], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(re.findall(r'^  .+? +[0-9.]+ ms/image$', proc.stdout, re.M)) == 4
    assert len(re.findall(r'^  .+? +[0-9.]+ img/s$', proc.stdout, re.M)) == 3
    assert len(re.findall(r'^  augmented loop / step alone, targets .+ = [0-9.]+$', proc.stdout,
                          re.M)) == 2
    assert len(re.findall(r"^  a worker's cost, targets .+: ours / GluonCV's = [0-9.]+  "
                          r"\(goal <= 0.5\)$", proc.stdout, re.M)) == 2


def test_benchmarks_refuse_an_unknown_model_in_one_line():
    scripts = ['bench_train.py', 'bench_infer.py', 'bench_peak.py', 'bench_loader.py']
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'benchmarks', script),
                               '--model', 'ssd_300_vgg16'], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for script in scripts]
    for script, proc in zip(scripts, procs):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (script, err[-800:])
        assert len(err.strip().splitlines()) == 1 and '--model' in err, (script, err[-800:])


@pytest.fixture
def benchmarks_module():
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    yield
    sys.path.remove(os.path.join(ROOT, 'benchmarks'))


@pytest.mark.parametrize('model, twin', [
    ('ssd_300_vgg16_atrous_center_voc', 'ssd_300_vgg16_atrous_voc'),
    ('ssd_512_mobilenet1.0_center_voc', 'ssd_512_mobilenet1.0_voc')])
def test_the_gluoncv_twin_of_a_large_model_is_gluoncvs_model_of_that_name(benchmarks_module,
                                                                         model, twin):
    """bench_train/bench_infer --model for the sizes users train (the runs themselves take
    minutes on 2 cores: not run here): GluonCV's zoo network, hybridized, anchors as ours."""
    import gluoncv
    import mxnet as mx
    from common import build, gluoncv_twin
    from gluoncv.model_zoo.ssd import SSD

    from gluon_ssdcl import SSDCenter
    ctx = [mx.cpu()]
    theirs = gluoncv_twin(model, ctx)
    ours = build(model, ctx)
    assert type(theirs) is SSD and isinstance(ours, SSDCenter)  # pylint: disable=unidiomatic-typecheck
    assert twin in gluoncv.model_zoo.get_model_list()
    assert list(theirs.classes) == list(ours.classes) and theirs.base_size == ours.base_size
    x = mx.nd.zeros((1, 3, ours.base_size, ours.base_size))
    with mx.autograd.train_mode():
        assert theirs(x)[2].shape == ours(x)[2].shape  # the same anchors count: same targets


def test_forward_flops_counts_convolutions_and_dense_layers(benchmarks_module):
    """Against the count by hand: 2 x outputs x inputs per output, grouped convolutions too."""
    import mxnet as mx
    from bench_peak import forward_flops

    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(8, 3, padding=1, in_channels=3),         # 8 x 10 x 10 outputs
            mx.gluon.nn.Conv2D(8, 3, strides=2, padding=1, groups=8, in_channels=8),  # 5 x 5
            mx.gluon.nn.Activation('relu'),
            mx.gluon.nn.Dense(6, in_units=200))
    net.initialize()
    net.base_size = 10
    by_hand = 2 * (8 * 10 * 10 * 3 * 9 + 8 * 5 * 5 * 1 * 9 + 6 * 200)
    assert forward_flops(net, 1) == by_hand
    assert forward_flops(net, 3) == 3 * by_hand


def test_bench_dist_prints_push_pull_times_and_the_throughput_ratio(digits_root):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'bench_dist.py'), '--model',
         'ssd_64_tiny_center_digits', '--pushpull-models', 'ssd_64_tiny_center_digits',
         '--servers', '1', '--batch-size', '2', '--iters', '2', '--rounds', '1',
         '--pushpull-iters', '2', '--dataset-root', digits_root],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pushpull = re.findall(r'^  ssd_64_tiny_center_digits +(\d+) arrays +([0-9.]+) MiB +1 server'
                          r'\(s\) +([0-9.]+) ms/step', proc.stdout, re.M)
    assert len(pushpull) == 1 and int(pushpull[0][0]) > 10 and float(pushpull[0][2]) > 0
    speeds = re.findall(r'^  .+? +([0-9.]+) img/s$', proc.stdout, re.M)
    assert len(speeds) == 2 and all(float(s) > 0 for s in speeds)
    assert re.search(r'^  1 process, \d+ threads .+\n  2 workers x \d+ threads, 1 server ',
                     proc.stdout, re.M)
    assert re.search(r'^  2 workers / 1 process = [0-9.]+$', proc.stdout, re.M)


def test_study_fast_grid_writes_its_summary_and_resumes_without_rerunning(tmp_path):
    import csv
    out = tmp_path / 'study'
    command = [sys.executable, os.path.join(ROOT, 'benchmarks', 'study_center_loss.py'),
               '--fast', '--out', str(out)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count('running ') == 2
    with open(out / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['mode'] for r in rows] == ['softmax', 'softmax-center']
    assert all(0 <= float(r['map']) <= 1 and float(r['minutes']) > 0 for r in rows)
    assert rows[0]['knn_acc'] == '' and 0 <= float(rows[1]['knn_acc']) <= 1
    assert 'ap_0' in rows[0] and rows[1]['compactness_ratio'] != ''
    table = (out / 'results.md').read_text().splitlines()
    assert len(table) == 4 and ' ± ' in table[2]
    assert (out / 'results.png').stat().st_size > 1000
    stamp = os.path.getmtime(out / 'center_l1_s0_eval.json')
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and 'running ' not in again.stdout, again.stderr[-2000:]
    assert os.path.getmtime(out / 'center_l1_s0_eval.json') == stamp
    (out / 'center_l1_s0_study.json').unlink()  # stopped after its results, before the record
    third = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert third.returncode == 0 and 'running ' not in third.stdout, third.stderr[-2000:]
    with open(out / 'results.csv') as f:
        assert [r['minutes'] for r in csv.DictReader(f)][1] == ''
    only = subprocess.run(command + ['--runs', 'softmax_s0'], capture_output=True, text=True,
                          timeout=600, env=env)
    assert only.returncode == 0 and 'running ' not in only.stdout, only.stderr[-2000:]
    with open(out / 'results.csv') as f:  # the summary keeps the other finished run
        assert [r['run'] for r in csv.DictReader(f)] == ['softmax_s0', 'center_l1_s0']
    bad = subprocess.run(command + ['--runs', 'nope'], capture_output=True, text=True,
                         timeout=600, env=env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        'error: --runs: not in the grid: nope']


def test_mnist_seeds_fast_writes_mean_std_beside_the_reference_and_resumes(tmp_path):
    import json
    out = tmp_path / 'mnist'
    command = [sys.executable, os.path.join(ROOT, 'benchmarks', 'mnist_seeds.py'), '--fast',
               '--seeds', '0,1', '--out', str(out)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count('seed ') == 2
    seeds = [json.loads((out / f'seed{s}.json').read_text()) for s in (0, 1)]
    table = (out / 'results.md').read_text().splitlines()
    assert len(table) == 5 and table[2].startswith('| softmax |')
    mean = (seeds[0]['softmax']['knn_acc'] + seeds[1]['softmax']['knn_acc']) / 2
    assert f'{mean:.4f} ± ' in table[2] and '| 0.9855 |' in table[2]
    assert (out / 'features.png').stat().st_size > 1000
    stamp = os.path.getmtime(out / 'seed1.json')
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and 'seed ' not in again.stdout, again.stderr[-2000:]
    assert os.path.getmtime(out / 'seed1.json') == stamp


def test_detector_errors_prints_its_tables_for_every_box(digits_root, tmp_path):
    """An untrained tiny digits checkpoint: three mAP rows, and the box tables count every
    validation box (read back from the data set), found or not."""
    import mxnet as mx

    from gluon_ssdcl import CenterLoss, get_model, initialize_params
    from gluon_ssdcl.data.datasets import get_dataset
    from gluon_ssdcl.engine.checkpoint import save_checkpoint
    net = get_model('ssd_64_tiny_center_digits', embed_dim=2)
    initialize_params(net, [mx.cpu()])
    center_loss = CenterLoss(10, 2)
    center_loss.initialize()
    path = str(tmp_path / 'tiny_best.params')
    save_checkpoint(path, net, center_loss, {
        'network': 'ssd_64_tiny_center_digits', 'classes': list('0123456789'), 'embed_dim': 2,
        'mode': 'softmax-center', 'dataset': 'digits', 'dataset_root': digits_root, 'epoch': 0})
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'detector_errors.py'), '--params',
         path, '--batch-size', '4'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(re.findall(r'^\| 0\.[357] \| [0-9.]+ \|', proc.stdout, re.M)) == 3
    boxes = sum(len(label) for _, label in get_dataset('digits', digits_root)[1])
    assert boxes > 0
    assert re.search(rf'^\| all \| {boxes} \| [0-9.]+ \|', proc.stdout, re.M), proc.stdout
    heights = re.findall(r'^\| [0-9]+(?:–[0-9]+|\+) \| ([0-9]+) \|', proc.stdout, re.M)
    assert len(heights) == 6 and sum(map(int, heights)) == boxes


def tiny_digits_checkpoints(digits_root, tmp_path):
    """``{mode: path}`` of untrained tiny digits checkpoints, softmax and softmax-center."""
    import mxnet as mx

    from gluon_ssdcl import CenterLoss, get_model, initialize_params
    from gluon_ssdcl.engine.checkpoint import save_checkpoint
    paths = {}
    for mode in ('softmax', 'softmax-center'):
        net = get_model('ssd_64_tiny_center_digits')
        initialize_params(net, [mx.cpu()])
        center_loss = CenterLoss(10, 16)
        center_loss.initialize()
        paths[mode] = str(tmp_path / f'{mode}_best.params')
        save_checkpoint(paths[mode], net, center_loss, {
            'network': 'ssd_64_tiny_center_digits', 'classes': list('0123456789'),
            'embed_dim': 16, 'mode': mode, 'dataset': 'digits', 'dataset_root': digits_root,
            'epoch': 0})
    return paths


def test_open_set_scores_draws_a_panel_per_run_and_score(benchmarks_module, digits_root,
                                                         tmp_path):
    """The figure from known scores; on untrained checkpoints (no true positive) one line, exit
    1; an unknown score is bad usage."""
    import open_set_scores
    rng = np.random.RandomState(0)
    rows = {run: {name: (rng.randn(50), rng.randn(20) + 2) for name in ('cosine', 'energy')}
            for run in ('softmax', 'center')}
    fig = open_set_scores.plot(rows, ['cosine', 'energy'])
    axes = fig.get_axes()
    assert len(axes) == 4 and all('AUROC 0.9' in ax.get_title() or 'AUROC 0.8' in ax.get_title()
                                  or 'AUROC 1.0' in ax.get_title() for ax in axes)
    assert len(axes[0].patches) == 2 * 39  # both histograms of 40 bin edges
    paths = tiny_digits_checkpoints(digits_root, tmp_path)
    script = os.path.join(ROOT, 'benchmarks', 'open_set_scores.py')
    out = tmp_path / 'scores.png'
    proc = subprocess.run(
        [sys.executable, script, '--runs', f"softmax={paths['softmax']}", '--out', str(out)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert 'nothing to draw' in proc.stderr and not out.exists()
    bad = subprocess.run([sys.executable, script, '--runs', f"a={paths['softmax']}", '--scores',
                          'cosine,nope', '--out', str(out)], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "unknown nope" in bad.stderr


def test_feature_maps_draws_each_run_with_tsne_and_pca(digits_root, tmp_path):
    """Two tiny digits checkpoints (softmax and softmax-center, 16-D) give one PNG; a run
    without a title is bad usage."""
    from PIL import Image
    paths = tiny_digits_checkpoints(digits_root, tmp_path)
    out = tmp_path / 'maps.png'
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'feature_maps.py'), '--runs',
         f"softmax={paths['softmax']}", f"softmax + center={paths['softmax-center']}",
         '--out', str(out), '--max-points', '200'], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(out)]
    with Image.open(out) as png:
        assert png.format == 'PNG' and png.width > 400 and png.height > 400
    bad = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'feature_maps.py'),
                          '--runs', 'no-title', '--out', str(out)], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and 'TITLE=CHECKPOINT' in bad.stderr
