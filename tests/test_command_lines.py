"""One rule for every command line: bad usage exits 2 with one line, a runtime failure exits 1
with one line naming the file, and no command prints a traceback; and no module imports another
module's private names."""
import ast
import glob
import os
import subprocess
import sys

import mxnet as mx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [os.path.join(ROOT, 'train_ssd_center.py')]
EVALUATE = ['-m', 'gluon_ssdcl.evaluate']
DETECT = ['-m', 'gluon_ssdcl.detect']
DIGITS = ['-m', 'gluon_ssdcl.data.digits']
CHECK = ['-m', 'gluon_ssdcl.data.check']
MODEL_ZOO = ['-m', 'gluon_ssdcl.model_zoo']
BENCH_TRAIN = [os.path.join(ROOT, 'benchmarks', 'bench_train.py')]
BENCH_INFER = [os.path.join(ROOT, 'benchmarks', 'bench_infer.py')]
BENCH_DIST = [os.path.join(ROOT, 'benchmarks', 'bench_dist.py')]
LAUNCH = ['-m', 'gluon_ssdcl.launch']
REGISTER = ['-m', 'gluon_ssdcl.register']
COMMANDS = {'train': TRAIN, 'evaluate': EVALUATE, 'detect': DETECT, 'digits': DIGITS,
            'check': CHECK, 'model_zoo': MODEL_ZOO, 'bench_train': BENCH_TRAIN,
            'bench_infer': BENCH_INFER, 'bench_dist': BENCH_DIST, 'launch': LAUNCH,
            'register': REGISTER}
TINY_TRAIN = ['--network', 'tiny', '--data-shape', '64', '--digits-train', '16',
              '--digits-val', '8', '--batch-size', '8', '-j', '0', '--epochs', '1']


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Paths: a junk checkpoint, a junk image, a good image, a non-digits folder, digits."""
    from gluon_ssdcl.data.digitset import ensure_digits
    tmp = tmp_path_factory.mktemp('cli')
    (tmp / 'junk.params').write_bytes(os.urandom(256))
    (tmp / 'junk.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a jpeg')
    (tmp / 'notes').mkdir()
    (tmp / 'notes' / 'todo.txt').write_text('mine')
    (tmp / 'empty.params').write_bytes(b'')
    (tmp / 'a_file').write_text('not a folder')
    digits = ensure_digits(str(tmp / 'digits'), num_train=16, num_val=8, progress=False)
    other = write_checkpoint(str(tmp / 'other.params'))
    with open(other, 'rb') as f:
        data = f.read()
    (tmp / 'truncated.params').write_bytes(data[:len(data) // 2])
    return {'dir': str(tmp), 'junk': str(tmp / 'junk.params'), 'junk_img': str(tmp / 'junk.jpg'),
            'notes': str(tmp / 'notes'), 'digits': digits, 'other': other,
            'empty': str(tmp / 'empty.params'), 'truncated': str(tmp / 'truncated.params'),
            'a_file': str(tmp / 'a_file')}


def write_checkpoint(path):
    """A checkpoint of a 2-class tiny network (not the digits one)."""
    from gluon_ssdcl import CenterLoss, get_model, initialize_params
    from gluon_ssdcl.engine.checkpoint import save_checkpoint
    net = get_model('ssd_64_tiny_center_custom', classes=['a', 'b'], embed_dim=2)
    initialize_params(net, [mx.cpu()])
    center_loss = CenterLoss(2, 2)
    center_loss.initialize()
    save_checkpoint(path, net, center_loss, {
        'network': 'ssd_64_tiny_center_custom', 'classes': ['a', 'b'], 'embed_dim': 2,
        'mode': 'softmax-center', 'dataset': 'custom', 'epoch': 0})
    return path


def cases(files):
    """(name, argv, exit code, words the one error line names)."""
    junk, tmp = files['junk'], files['dir']
    bench = ['--model', 'ssd_64_tiny_center_digits', '--dataset-root', files['digits'],
             '--iters', '1', '--rounds', '1', '--batch-size', '2']
    required = {'evaluate': ['--params', junk], 'detect': [files['junk_img'], '--params', junk],
                'check': ['--root', tmp], 'launch': ['-n', '1'], 'register': ['--params', junk]}
    table = [(f'{name} bad flag', argv + required.get(name, []) + ['--no-such-flag'], 2,
              ['--no-such-flag']) for name, argv in COMMANDS.items()]
    table += [
        ('train bad value', TRAIN + ['--lr', 'nan'], 2, ['--lr']),
        ('evaluate bad value', EVALUATE + ['--params', junk, '--batch-size', '0'], 2,
         ['--batch-size']),
        ('digits bad value', DIGITS + ['--num-train', '0'], 2, ['--num-train']),
        ('train unreadable checkpoint', TRAIN + TINY_TRAIN + [
            '--dataset-root', files['digits'], '--save-prefix', os.path.join(tmp, 'run'),
            '--init-from', junk], 1, [junk]),
        ('evaluate unreadable checkpoint', EVALUATE + ['--params', junk], 1, [junk]),
        ('detect unreadable checkpoint', DETECT + [files['junk_img'], '--params', junk], 1,
         [junk]),
        ('bench_infer unreadable checkpoint', BENCH_INFER + bench + ['--params', junk], 1,
         [junk]),
        ('digits not a digits folder', DIGITS + ['--root', files['notes']], 1, [files['notes']]),
        ('check not a data set', CHECK + ['--root', files['notes']], 1, [files['notes']]),
        ('train resume random bytes', TRAIN + ['--resume', junk], 1, [junk]),
        ('train resume empty file', TRAIN + ['--resume', files['empty']], 1, [files['empty']]),
        ('train resume truncated', TRAIN + ['--resume', files['truncated']], 1,
         [files['truncated']]),
        ('train init-from another network', TRAIN + TINY_TRAIN + [
            '--dataset-root', files['digits'], '--save-prefix', os.path.join(tmp, 'other'),
            '--init-from', files['other']], 1, [files['other'], 'does not fit']),
        ('train unwritable prefix', TRAIN + TINY_TRAIN + [
            '--dataset-root', files['digits'], '--save-prefix',
            os.path.join(files['a_file'], 'run')], 1, [files['a_file']]),
        ('detect output is a file', DETECT + [files['junk_img'], '--params', files['other'],
                                              '-o', files['a_file']], 2, ['-o/--output-dir']),
        ('train --gpus 0', TRAIN + ['--gpus', '0'], 1, ['--gpus 0']),
        ('evaluate --gpus 0', EVALUATE + ['--params', junk, '--gpus', '0'], 1, ['--gpus 0']),
        ('detect --gpus 0', DETECT + [files['junk_img'], '--params', junk, '--gpus', '0'], 1,
         ['--gpus 0']),
        ('bench_train --gpus 0', BENCH_TRAIN + bench + ['--gpus', '0'], 1, ['--gpus 0']),
        ('bench_infer --gpus 0', BENCH_INFER + bench + ['--gpus', '0'], 1, ['--gpus 0']),
        ('bench_dist --gpus 0', BENCH_DIST + bench + ['--gpus', '0'], 1, ['--gpus 0']),
        ('launch a failing worker', LAUNCH + ['-n', '1', '-s', '1', '--', sys.executable, '-c',
                                              'import sys; sys.exit(3)'], 1,
         ['worker 0', 'exited with code 3']),
        ('export bad flag', ['-m', 'gluon_ssdcl.export', '--params', junk, '--no-such-flag'], 2,
         ['--no-such-flag']),
        ('export unreadable checkpoint', ['-m', 'gluon_ssdcl.export', '--params', junk], 1,
         [junk]),
        ('export output is a file', ['-m', 'gluon_ssdcl.export', '--params', files['other'],
                                     '-o', files['a_file']], 2, ['-o/--output-dir']),
        ('train bad --digits-exclude', TRAIN + ['--digits-exclude', '8,x'], 2,
         ['--digits-exclude', 'x']),
        ('digits bad --exclude-classes', DIGITS + ['--exclude-classes', '0,1,2,3,4,5,6,7,8,9'],
         2, ['--exclude-classes']),
        ('evaluate --open-set without classes', EVALUATE + ['--params', junk, '--open-set'], 2,
         ['--unknown-classes']),
        ('evaluate --open-set unreadable checkpoint', EVALUATE + [
            '--params', junk, '--open-set', '--unknown-classes', 'b'], 1, [junk]),
        ('evaluate --open-set unknown class', EVALUATE + [
            '--params', files['other'], '--open-set', '--unknown-classes', 'zebra'], 1,
         ['--unknown-classes', 'zebra']),
        ('register without examples', REGISTER + ['--params', junk, '--name', 'x'], 2,
         ['--name']),
        ('register bad box', REGISTER + ['--params', junk, '--name', 'x', 'a.jpg:1,2,3'], 2,
         ['a.jpg:1,2,3']),
        ('register unreadable checkpoint', REGISTER + [
            '--params', junk, '--name', 'x', files['junk_img'] + ':1,1,5,5'], 1, [junk]),
        ('register --evaluate of a non-digits model', REGISTER + [
            '--params', files['other'], '--evaluate', '--classes', '8'], 1, ['--digits-exclude']),
        ('open_set_study bad stage', [os.path.join(ROOT, 'benchmarks', 'open_set_study.py'),
                                      '--stages', 'nope', '--out', os.path.join(tmp, 'oss')], 2,
         ['--stages', 'nope']),
    ]
    return table


def test_every_command_line_follows_the_exit_code_rule(files):
    """All cases run at once (each is a fresh Python process), then each is checked."""
    env = dict(os.environ, OMP_NUM_THREADS='1', HOME=files['dir'])
    table = cases(files)
    procs = [subprocess.Popen([sys.executable] + argv, cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _, argv, _, _ in table]
    failures = []
    for (name, _, code, words), proc in zip(table, procs):
        _, err = proc.communicate(timeout=600)
        errors = [line for line in err.splitlines() if 'error:' in line]
        if (proc.returncode != code or len(errors) != 1 or 'Traceback' in err
                or not all(word in errors[0] for word in words)):
            failures.append(f'{name}: exit {proc.returncode} (want {code}), stderr:\n{err[-800:]}')
    assert not failures, '\n\n'.join(failures)


def test_a_bad_flag_is_one_line_without_usage(files):
    proc = subprocess.run([sys.executable] + CHECK + ['--split'], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and 'usage' not in proc.stderr


def private_imports(path):
    """``from module import _name`` statements of a file, as 'line: text'."""
    tree = ast.parse(open(path).read(), path)
    return [f'{path}:{node.lineno}: from {node.module} import {alias.name}'
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for alias in node.names
            if alias.name.startswith('_') and not alias.name.startswith('__')]


def test_no_module_imports_a_private_name_of_another():
    paths = (glob.glob(os.path.join(ROOT, 'gluon_ssdcl', '**', '*.py'), recursive=True)
             + glob.glob(os.path.join(ROOT, 'benchmarks', '*.py'))
             + [os.path.join(ROOT, 'train_ssd_center.py')])
    assert len(paths) > 20
    found = [line for path in paths for line in private_imports(path)]
    assert not found, '\n'.join(found)


def test_the_private_import_check_finds_one(tmp_path):
    path = tmp_path / 'bad.py'
    path.write_text('from .cli import _OneLineErrorParser\nfrom .x import public, _hidden\n')
    assert len(private_imports(str(path))) == 2


@pytest.mark.parametrize('meta', [b'{"epoch": 3', b'\xff\xfe not text', b'[1, 2]'])
def test_convert_names_a_checkpoint_whose_metadata_is_corrupt(tmp_path, capsys, meta):
    from gluon_ssdcl.commands.checkpoint import main as checkpoint_main
    path = str(tmp_path / 'old.params')
    mx.nd.save(path, {'net.weight': mx.nd.zeros((2,)), 'centers': mx.nd.zeros((2, 2)),
                      'meta': mx.nd.array(list(meta), dtype='uint8')})
    assert checkpoint_main(['--convert', path]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: ') and path in line and 'metadata' in line, line
    assert os.listdir(tmp_path) == ['old.params']


def entry_point_cases(tmp):
    """(argv, exit code, lines on stderr): ``--help`` of the training script, of the console
    script and of each earlier ``python -m`` name; of those runpy once warned about, an error
    each."""
    script = os.path.join(os.path.dirname(sys.executable), 'gluon-ssdcl')
    console = [script] if os.path.isfile(script) else [sys.executable, '-m', 'gluon_ssdcl']
    shims = ('evaluate', 'detect', 'export', 'register', 'launch', 'data.digits', 'data.check')
    table = [([sys.executable] + TRAIN + ['--help'], 0, 0), (console + ['--help'], 0, 0),
             (console + ['models', '--help'], 0, 0)]
    table += [([sys.executable, '-m', f'gluon_ssdcl.{shim}', '--help'], 0, 0) for shim in shims]
    table += [([sys.executable, '-m', 'gluon_ssdcl.checkpoint', '--convert',
                os.path.join(tmp, 'missing.params')], 1, 1),
              ([sys.executable] + MODEL_ZOO + ['--no-such-flag'], 2, 1)]
    return table


def test_every_entry_point_helps_and_the_shims_run_without_warnings(tmp_path):
    """All at once (each a fresh Python process): exit codes, no traceback, no runpy warning,
    an error in one line."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    table = entry_point_cases(str(tmp_path))
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for argv, _, _ in table]
    failures = []
    for (argv, code, lines), proc in zip(table, procs):
        out, err = proc.communicate(timeout=600)
        if (proc.returncode != code or 'Traceback' in err or 'Warning' in err
                or len(err.strip().splitlines()) != lines or (code == 0 and not out.strip())):
            failures.append(f"{' '.join(argv[1:])}: exit {proc.returncode} (want {code}), "
                            f"stderr:\n{err[-800:]}")
    assert not failures, '\n\n'.join(failures)


def test_every_command_of_the_console_script_helps(capsys):
    from gluon_ssdcl.commands import COMMANDS
    from gluon_ssdcl.commands import main as console_main
    for name in COMMANDS:
        with pytest.raises(SystemExit) as stop:
            console_main([name, '--help'])
        assert stop.value.code == 0, name
        assert capsys.readouterr().out.startswith('usage: '), name
