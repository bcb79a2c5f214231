"""Every notebook runs top to bottom (shrunk by JVAE_NOTEBOOK_SMOKE) and is committed clean."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / 'notebooks').glob('*.ipynb'))


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, f'{path.name} has outputs'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
  monkeypatch.setenv('JVAE_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  notebook = nbformat.read(path, as_version=4)
  client = NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(path.parent.parent)}})
  client.execute()  # Raises CellExecutionError, with the cell and traceback, on any error.
  assert os.environ['JVAE_NOTEBOOK_SMOKE'] == '1'
