"""The benchmark scripts run (tiny network, one round) and print their ratios."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    from gluon_ssdcl.data.digits import ensure_digits
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
