"""Every ```bash and ```python block of README.md and docs/*.md runs as written.

Each page runs its blocks in order, in a sandbox of its own: a temporary working directory,
HOME a temporary folder (so ``~/.gluon_ssdcl/datasets/digits`` is the sandbox's), PATH with
this Python's folder first (so ``gluon-ssdcl`` is the venv's) and OMP_NUM_THREADS=1 (the pages
run concurrently). A shell block runs line by line (a line ending in a backslash goes on), each
with ``bash -e -c`` after the substitutions below, so that a line sees the files of the lines
before it. A Python block runs alone in a fresh
interpreter (``python -c``), as if pasted: a name it uses without importing or defining it
fails the block (NameError). A failing block is reported with its page, number, text and
stderr, and its page stops there (later blocks use its files).

A block whose first line is ``# not run in CI: <reason>`` is skipped. :data:`SKIPPED` says how
many each page has, so a block skipped by mistake fails the test; the flags of the
``gluon-ssdcl train`` lines of skipped blocks are still parsed.

The substitutions, on shell command lines only (the line stays as written and flags are
appended; argparse takes the last value of a repeated flag):

1. ``gluon-ssdcl train FLAGS`` (also after ``gluon-ssdcl launch ... --``) gets
   :data:`TINY_TRAIN` and ``--save-prefix P``, P being the prefix the line as written would
   use (``gluon_ssdcl.commands.train.parse_args(FLAGS).save_prefix``), so later blocks find
   its files. On the digits set it also gets :data:`TINY_DIGITS` ``['train']`` and
   ``--dataset-root ~/.gluon_ssdcl/datasets/digits``, or ``.../digits-without8-9`` for
   ``--digits-exclude 8,9`` (a set with held-out classes is another set).
2. ``gluon-ssdcl train --resume ...`` gets :data:`RESUME_EPOCHS` (one epoch more than the
   resumed run, whose other flags it must keep).
3. ``gluon-ssdcl digits ...`` gets :data:`TINY_DIGITS` ``['digits']``.
4. ``gluon-ssdcl register --evaluate ...`` gets :data:`FEW_SHOTS`: 64 training images hold
   fewer than 20 boxes of a digit.
"""
import concurrent.futures
import contextlib
import glob
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import List, NamedTuple, Optional, Tuple
from unittest import mock

import pytest

from gluon_ssdcl.commands.train import build_parser, parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(os.path.relpath(path, ROOT)
                               for path in glob.glob(os.path.join(ROOT, 'docs', '*.md')))
# skipped blocks per page (the others run)
SKIPPED = {'README.md': 3, 'docs/training.md': 1, 'docs/data.md': 1, 'docs/distributed.md': 1,
           'docs/benchmarks.md': 1}
SKIP_MARK = re.compile(r'# not run in CI: \S')
BLOCK = re.compile(r'^```(bash|python)\n(.*?)^```$', re.M | re.S)
FENCE = re.compile(r'^```([^\n]*)\n.*?^```$', re.M | re.S)
TINY_TRAIN = ['--network', 'tiny', '--data-shape', '64', '--epochs', '1', '--batch-size', '8',
              '-j', '0']
TINY_DIGITS = {'train': ['--digits-train', '64', '--digits-val', '16'],
               'digits': ['--num-train', '64', '--num-val', '16']}
RESUME_EPOCHS = ['--epochs', '2']
FEW_SHOTS = ['--shots', '1,5']
BLOCK_TIMEOUT = 300
# parse_args reads paths relative to the working directory and the environment: one page at a
# time changes them, and the sandboxes copy the environment as it was before
_CWD_LOCK = threading.Lock()
ENVIRON = dict(os.environ)


class Block(NamedTuple):
    """A fenced code block of a page: its language ('bash' or 'python') and text."""
    page: str
    number: int
    language: str
    text: str

    @property
    def skipped(self) -> bool:
        return bool(SKIP_MARK.match(self.text))


def page_blocks(page: str, text: str) -> List[Block]:
    """The ```bash and ```python blocks of a page's markdown ``text``, numbered from 1."""
    return [Block(page, number, match.group(1), match.group(2))
            for number, match in enumerate(BLOCK.finditer(text), 1)]


def logical_lines(script: str) -> List[str]:
    """The lines of a shell script, a line ending in a backslash joined to the next one."""
    lines, current = [], ''
    for line in script.splitlines(keepends=True):
        current += line
        if not current.rstrip('\n').endswith('\\'):
            lines.append(current.rstrip('\n'))
            current = ''
    return lines + ([current] if current else [])


def train_args(argv: List[str], cwd: str, launched: bool):
    """``parse_args(argv)`` as the command would run it: in ``cwd``, and as a worker of a job
    (``DMLC_ROLE=worker``) when ``launched``.

    Raises
    ------
    ValueError
        With parse_args' one line, when it refuses the flags.
    """
    stderr = io.StringIO()
    with _CWD_LOCK, contextlib.chdir(cwd), contextlib.redirect_stderr(stderr), \
            mock.patch.dict(os.environ, {'DMLC_ROLE': 'worker'} if launched else {}):
        try:
            return parse_args(argv)
        except SystemExit as err:
            raise ValueError(f"train flags {shlex.join(argv)} refused: "
                             f"{stderr.getvalue().strip()}") from err


def gluon_command(line: str) -> Optional[Tuple[str, List[str], bool]]:
    """(command, its flags, whether ``gluon-ssdcl launch`` starts it) of the last
    ``gluon-ssdcl <command>`` of a shell command ``line``, or None."""
    tokens = shlex.split(line.replace('\\\n', ' '))
    starts = [i for i in range(len(tokens) - 1) if tokens[i] == 'gluon-ssdcl']
    if not starts:
        return None
    start = starts[-1]
    return tokens[start + 1], tokens[start + 2:], 'launch' in tokens[:start]


def substitute(line: str, cwd: str, home: str) -> str:
    """The shell command ``line`` with the module docstring's substitutions applied, for a
    sandbox of working directory ``cwd`` and HOME ``home``."""
    command, argv, launched = gluon_command(line) or ('', [], False)
    if command not in ('train', 'digits', 'register'):
        return line
    if '#' in line:
        raise ValueError(f"cannot append flags to a line with a comment: {line}")
    if command == 'digits':
        extra = TINY_DIGITS['digits']
    elif command == 'register':
        if '--evaluate' not in argv:
            return line
        extra = FEW_SHOTS
    elif '--resume' in argv:
        extra = RESUME_EPOCHS
    else:
        args = train_args(argv, cwd, launched)
        extra = TINY_TRAIN + ['--save-prefix', args.save_prefix]
        if args.dataset == 'digits':
            name = 'digits'
            if args.digits_exclude:
                name += '-without' + '-'.join(map(str, args.digits_exclude))
            extra = extra + TINY_DIGITS['train'] + [
                '--dataset-root', os.path.join(home, '.gluon_ssdcl', 'datasets', name)]
    return f'{line} {shlex.join(extra)}'


def sandbox_env(home: str) -> dict:
    """The environment of a sandbox's blocks."""
    env = {key: value for key, value in ENVIRON.items() if key != 'GLUON_SSDCL_DATA'}
    env.update(HOME=home, OMP_NUM_THREADS='1',
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', ''))
    return env


def failure(block: Block, ran: str, reason: str, stderr: str = '') -> str:
    """The report of a failed block."""
    text = f"{block.page}, block {block.number} ({block.language}) {reason}:\n{block.text}"
    if ran != block.text:
        text += f"--- run as:\n{ran}"
    return text + (f"--- stderr (end):\n{stderr[-4000:]}" if stderr else '')


def run_page(page: str, text: str, folder: str) -> Optional[str]:
    """Run the blocks of one page in a sandbox in ``folder``; the first failure's report, or
    None when every block that is not skipped succeeds."""
    cwd, home = os.path.join(folder, 'work'), os.path.join(folder, 'home')
    os.makedirs(cwd)
    os.makedirs(home)
    env = sandbox_env(home)
    for block in page_blocks(page, text):
        report = None if block.skipped else run_block(block, cwd, home, env)
        if report:
            return report
    return None


def run_block(block: Block, cwd: str, home: str, env: dict) -> Optional[str]:
    """Run one block in a sandbox; the failure's report, or None. A shell block runs line by
    line, each line substituted just before it runs (it may name files the lines before it
    wrote)."""
    if block.language == 'python':
        return run_step(block, block.text, [sys.executable, '-c', block.text], cwd, env)
    ran = ''
    for line in logical_lines(block.text):
        try:
            line = substitute(line, cwd, home)
        except ValueError as err:
            return failure(block, f'{ran}{line}\n', 'could not be substituted', str(err))
        ran += line + '\n'
        report = run_step(block, ran, ['bash', '-e', '-c', line], cwd, env)
        if report:
            return report
    return None


def run_step(block: Block, ran: str, command: List[str], cwd: str, env: dict) -> Optional[str]:
    """Run ``command`` of ``block`` (``ran``: its text as run so far) in a process group of its
    own, all of it killed after :data:`BLOCK_TIMEOUT`; the failure's report, or None."""
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            _, stderr = process.communicate(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            processes = subprocess.run(['ps', '-o', 'pid,ppid,stat,wchan:24,etime,args', '-g',
                                        str(process.pid)], capture_output=True, text=True,
                                       check=False).stdout
            os.killpg(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
            return failure(block, ran, f'ran over {BLOCK_TIMEOUT} s', f'{stderr}\n{processes}')
    if process.returncode != 0:
        return failure(block, ran, f'exited with {process.returncode}', stderr)
    return None


def read_page(page: str) -> str:
    """The markdown of ``page`` (a path relative to the repository)."""
    with open(os.path.join(ROOT, page), encoding='utf-8') as f:
        return f.read()


# the pages with blocks to run
RUN_PAGES = [page for page in PAGES
             if any(not block.skipped for block in page_blocks(page, read_page(page)))]


@pytest.fixture(scope='module')
def page_failures(tmp_path_factory):
    """{page: its first failure's report, or None}, the pages run concurrently."""
    folder = tmp_path_factory.mktemp('docs')
    with concurrent.futures.ThreadPoolExecutor(len(RUN_PAGES)) as pool:
        futures = {page: pool.submit(run_page, page, read_page(page),
                                     str(folder / page.replace('/', '_')))
                   for page in RUN_PAGES}
        return {page: future.result() for page, future in futures.items()}


def test_every_page_has_its_skipped_blocks():
    skipped = {page: sum(block.skipped for block in page_blocks(page, read_page(page)))
               for page in PAGES}
    assert {page: n for page, n in skipped.items() if n} == SKIPPED


def test_every_code_block_is_bash_or_python():
    """Another language would not run; the one diagram is in design.md."""
    languages = {page: set(FENCE.findall(read_page(page))) for page in PAGES}
    assert languages.pop('docs/design.md') == {''}
    assert set().union(*languages.values()) == {'bash', 'python'}


def test_train_lines_of_skipped_blocks_have_real_flags():
    parser = build_parser()
    for page in PAGES:
        for block in page_blocks(page, read_page(page)):
            lines = logical_lines(block.text) if block.skipped and block.language == 'bash' else []
            for command, argv, _ in filter(None, map(gluon_command, lines)):
                try:
                    if command == 'train':
                        parser.parse_args(argv)
                except SystemExit:
                    pytest.fail(f"{page}, block {block.number}: bad train flags {argv}")


@pytest.mark.parametrize('page', RUN_PAGES)
def test_page_examples_run(page, page_failures):
    if page_failures[page]:
        pytest.fail(page_failures[page], pytrace=False)


def test_a_failing_block_is_reported_with_its_page_text_and_stderr(tmp_path):
    page = '```bash\ntrue\n```\n\n```python\nimport os\nprint(json.dumps(os.sep))\n```\n'
    report = run_page('x.md', page, str(tmp_path / 'python'))
    assert report.startswith('x.md, block 2 (python) exited with 1:\nimport os\n')
    assert "NameError: name 'json' is not defined" in report
    report = run_page('x.md', '```bash\nfalse\necho still running\n```\n', str(tmp_path / 'sh'))
    assert report == ('x.md, block 1 (bash) exited with 1:\nfalse\necho still running\n'
                      '--- run as:\nfalse\n')


def test_a_block_over_time_is_killed_with_its_children(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), 'BLOCK_TIMEOUT', 1)
    report = run_page('x.md', '```bash\nsleep 60 & echo $! > pid; wait\n```\n', str(tmp_path))
    assert report.startswith('x.md, block 1 (bash) ran over 1 s:\n')
    assert 'sleep 60' in report.split('--- stderr (end):')[1]  # the processes it left
    with open(tmp_path / 'work' / 'pid') as f:
        pid = int(f.read())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail('the block\'s child still runs')


def test_substitutions(tmp_path):
    cwd, home = str(tmp_path), '/home/u'
    digits = ['--digits-train', '64', '--digits-val', '16', '--dataset-root']
    line = 'gluon-ssdcl train --center-loss \\\n    --epochs 3'
    assert substitute(line, cwd, home) == line + ' ' + shlex.join(
        TINY_TRAIN + ['--save-prefix', 'runs/ssd_256_small_center_digits_softmax-center']
        + digits + ['/home/u/.gluon_ssdcl/datasets/digits'])
    line = 'gluon-ssdcl train --digits-exclude 8,9'
    assert substitute(line, cwd, home).endswith(
        ' --save-prefix runs/ssd_256_small_center_digits_softmax_without8-9 '
        + shlex.join(digits + ['/home/u/.gluon_ssdcl/datasets/digits-without8-9']))
    line = 'gluon-ssdcl launch -n 2 -- gluon-ssdcl train --kvstore dist_sync --embed-dim 2'
    assert ' --save-prefix runs/ssd_256_small_center_digits_softmax_d2 ' in substitute(
        line, cwd, home)
    line = 'gluon-ssdcl train --resume runs/x --epochs 8'
    assert substitute(line, cwd, home) == line + ' --epochs 2'
    line = 'gluon-ssdcl digits --root data/d --seed 1'
    assert substitute(line, cwd, home) == line + ' --num-train 64 --num-val 16'
    line = 'gluon-ssdcl register --params runs/x --evaluate --classes 8,9 --shots 1,5,20'
    assert substitute(line, cwd, home) == line + ' --shots 1,5'
    line = 'gluon-ssdcl register --params runs/x --name 8 a.jpg:1,2,3,4'
    assert substitute(line, cwd, home) == line
    assert substitute('gluon-ssdcl detect --params runs/x a.jpg', cwd, home) == \
        'gluon-ssdcl detect --params runs/x a.jpg'
    with pytest.raises(ValueError, match='--init-from: no such file'):
        substitute('gluon-ssdcl train --init-from runs/a_best.params', cwd, home)
    (tmp_path / 'runs').mkdir()
    (tmp_path / 'runs' / 'a_best.params').write_bytes(b'')  # found in the sandbox's folder
    assert ' --save-prefix runs/ssd_256_small_center_digits_center ' in substitute(
        'gluon-ssdcl train --center-only --init-from runs/a_best.params', cwd, home)
