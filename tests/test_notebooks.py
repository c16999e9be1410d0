"""Every committed notebook runs without errors (fast mode) and is committed without outputs."""
import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / 'notebooks').glob('*.ipynb'))
KERNEL = 'python3'  # ipykernel's own spec: runs this interpreter (sys.executable)
TIMEOUT = 600  # seconds per cell


def _execute(nb, cwd):
    """Run ``nb`` in a fresh kernel whose working directory is ``cwd``."""
    NotebookClient(nb, timeout=TIMEOUT, kernel_name=KERNEL,
                   resources={'metadata': {'path': str(cwd)}}).execute()
    return nb


def test_notebooks_exist():
    assert NOTEBOOKS, 'no notebooks/*.ipynb found'


def test_kernel_is_this_interpreter(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        'import os, sys, gluon_ssdcl\nprint(sys.prefix)\nprint(os.getcwd())')]
    _execute(nb, tmp_path)
    prefix, cwd = nb.cells[0].outputs[0]['text'].split()
    assert os.path.realpath(prefix) == os.path.realpath(sys.prefix)
    assert os.path.realpath(cwd) == os.path.realpath(tmp_path)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, tmp_path, monkeypatch):
    """Runs in a temporary folder with ``GLUON_SSDCL_FAST=1`` (the kernel inherits it), so
    whatever the notebook writes lands in ``tmp_path``, not in the repository."""
    monkeypatch.setenv('GLUON_SSDCL_FAST', '1')
    nb = nbformat.read(path, as_version=4)
    try:
        _execute(nb, tmp_path)
    except CellExecutionError as err:  # its message holds the failing cell and its traceback
        pytest.fail(f'{path.name} failed:\n{err}', pytrace=False)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [index for index, cell in enumerate(nb.cells) if cell.cell_type == 'code'
             and (cell.get('outputs') or cell.get('execution_count') is not None)]
    assert not dirty, (f'{path.name}: cells {dirty} have outputs or execution counts; clear '
                       f'them (jupyter nbconvert --clear-output --inplace {path.name})')
