"""A normal install: a wheel built from the repository, installed into a fresh virtual environment,
runs every console command and trains from another working directory."""
import glob
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from PIL import Image

from gluon_ssdcl.commands import COMMANDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--network', 'tiny', '--data-shape', '64', '--epochs', '1', '--digits-train', '16',
        '--digits-val', '8', '--batch-size', '8', '-j', '0']

pytestmark = pytest.mark.slow


def run(argv, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))}: exit {proc.returncode}\n" \
                                 f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """A fresh venv holding the wheel of the repository (not an editable install); its
    dependencies (MXNet, GluonCV, ...) are the test environment's, reached through a .pth file
    that adds their folder to the new venv's path."""
    tmp = tmp_path_factory.mktemp('install')
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
         '-w', str(tmp / 'dist'), ROOT])
    wheels = glob.glob(str(tmp / 'dist' / 'gluon_ssdcl-*.whl'))
    assert len(wheels) == 1, wheels
    venv = tmp / 'venv'
    run([sys.executable, '-m', 'venv', str(venv)])
    python = venv / 'bin' / 'python'
    site = run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']
               ).stdout.strip()
    with open(os.path.join(site, 'dependencies.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    run([str(python), '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', wheels[0]])
    return venv


def test_the_wheel_is_installed_not_the_work_tree(installed, tmp_path):
    python = installed / 'bin' / 'python'
    found = run([str(python), '-c', 'import gluon_ssdcl; print(gluon_ssdcl.__file__)'],
                cwd=tmp_path).stdout.strip()
    assert found.startswith(str(installed)) and not found.startswith(ROOT)


def test_every_console_command_runs_from_another_folder(installed, tmp_path):
    script = str(installed / 'bin' / 'gluon-ssdcl')
    procs = {name: subprocess.Popen([script, name, '--help'], cwd=tmp_path, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in COMMANDS}
    failed = []
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 0 or 'usage:' not in out:
            failed.append(f'{name}: exit {proc.returncode}\n{err[-1500:]}')
    assert not failed, '\n'.join(failed)
    assert 'train' in run([script, '--help'], cwd=tmp_path).stdout


def test_the_installed_command_trains_evaluates_detects_and_exports(installed, tmp_path):
    script = str(installed / 'bin' / 'gluon-ssdcl')
    env = dict(os.environ, HOME=str(tmp_path), GLUON_SSDCL_DATA=str(tmp_path / 'data'))
    prefix = 'runs/tiny'
    run([script, 'train', '--center-loss', '--save-prefix', prefix] + TINY, cwd=tmp_path,
        env=env)
    assert os.path.isfile(tmp_path / f'{prefix}_best.params')
    assert '0.' in run([script, 'evaluate', '--params', prefix, '-j', '0'], cwd=tmp_path,
                       env=env).stdout
    images = glob.glob(str(tmp_path / 'data' / '*' / 'VOC2007' / 'JPEGImages' / 'val_*.jpg'))
    drawn = run([script, 'detect', '--params', prefix, images[0]], cwd=tmp_path,
                env=env).stdout.split()
    assert len(drawn) == 1 and os.path.isfile(tmp_path / drawn[0])
    written = run([script, 'export', '--params', prefix, '-o', 'exported'], cwd=tmp_path,
                  env=env).stdout.split()
    assert written and all(os.path.isfile(tmp_path / path) for path in written)


def test_the_wheel_ships_the_default_weights(installed, tmp_path):
    script = str(installed / 'bin' / 'gluon-ssdcl')
    env = dict(os.environ, HOME=str(tmp_path))
    image = tmp_path / 'canvas.jpg'
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(image)
    drawn = run([script, 'detect', '--pretrained', str(image)], cwd=tmp_path,
                env=env).stdout.split()
    assert drawn == ['detections/canvas_detections.png'] and os.path.isfile(tmp_path / drawn[0])
    copies = sorted(os.listdir(tmp_path / '.gluon_ssdcl' / 'models'))
    assert copies == [f'ssd_256_small_center_digits{s}' for s in ('.openset.npz', '.params',
                                                                  '.state')]
