"""benchmarks/open_set_study.py: its fast grid trains, evaluates, summarises and resumes."""
import csv
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_open_set_study_fast_grid_writes_its_summary_and_skips_what_is_done(tmp_path):
    out = tmp_path / 'study'
    command = [sys.executable, os.path.join(ROOT, 'benchmarks', 'open_set_study.py'), '--fast',
               '--out', str(out)]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT,
               GLUON_SSDCL_DATA=str(tmp_path / 'data'))
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-2000:] + first.stdout[-2000:]
    for stage in ('train', 'openset', 'fewshot'):
        assert first.stdout.count(f'{stage} ') >= 2, first.stdout
    with open(out / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['mode'] for r in rows] == ['softmax', 'center']
    for r in rows:
        assert r['auroc_center'] == '' or 0 <= float(r['auroc_center']) <= 1
        assert 'ap_registered_center_k1' in r and 'map_known' in r
    table = (out / 'results.md').read_text()
    assert 'auroc_msp' in table and ' ± ' in table
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not any(line.split()[0] in ('train', 'openset', 'fewshot')
                   for line in again.stdout.splitlines() if line.strip() and ' ' in line
                   and line.split()[1].endswith('_s0')), again.stdout
    bad = subprocess.run(command + ['--stages', 'train,oops'], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
