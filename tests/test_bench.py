"""The JAX half of `python -m jvae.bench` on the tiny test config, in-process (no torch).

The PyTorch twin's equality checks live in the bench itself (`python -m jvae.bench --check`),
because torch is an optional extra that CI does not install; the one torch test here (the twin's
memory run) is skipped without it.
"""

import json
import math
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from jvae import bench, step_profile


def test_benchmark_row_has_positive_fields():
  torch_loaded = 'torch' in sys.modules
  row = bench.benchmark_config(str(REPO / 'configs' / 'test.py'), steps=3, warmup=1,
                               use_torch=False, pipeline_steps=10)
  assert row['config'] == 'test'
  assert row['pipeline_steps'] == 10
  assert row['batch'] == 16
  assert row['image_shape'] == [8, 8, 1]
  for field in ('params', 'jax_ms', 'jax_img_s', 'compile_s', 'pipeline_ms',
                'pipeline_resident_ms', 'jax_peak_rss_mb'):
    assert math.isfinite(row[field]) and row[field] > 0, (field, row[field])
  assert math.isfinite(row['pipeline_overhead_pct'])
  # Two pairs of 5-step blocks: their overheads' quartiles bracket something.
  assert row['pipeline_overhead_q1_pct'] <= row['pipeline_overhead_q3_pct']
  assert 'torch_eager_ms' not in row
  assert 'torch_eager_model_mb' not in row
  table = bench.format_table([row])
  assert table.splitlines()[2].startswith('| test | 16 | 8x8x1 |')
  header, _, line = table.splitlines()[:3]
  cell = dict(zip(header.split(' | '), line.split(' | ')))['pipeline overhead %']
  # Read the cell back as numbers: a tiny config's overhead can pass 1,000 % (thousands separator).
  shown = re.fullmatch(r'(\S+) \((\S+)\.\.(\S+)\)', cell)
  assert shown, cell
  for text, field in zip(shown.groups(), ('pipeline_overhead_pct', 'pipeline_overhead_q1_pct',
                                          'pipeline_overhead_q3_pct')):
    assert float(text.replace(',', '')) == round(row[field], 1), (cell, field, row[field])
  # The JAX-only bench never imports torch (unless something else in this process already has).
  assert torch_loaded or 'torch' not in sys.modules


def test_the_jax_memory_fields_are_the_peak_past_a_baseline():
  row = bench.benchmark_config(str(REPO / 'configs' / 'test.py'), steps=2, warmup=1,
                               use_torch=False)
  for field in ('jax_peak_rss_mb', 'jax_baseline_rss_mb', 'jax_model_mb', 'jax_warm_up_mb'):
    assert math.isfinite(row[field]), (field, row[field])
  # Parameters, Adam's moments, the compiled step and its buffers: more than nothing.
  assert row['jax_model_mb'] > 0
  assert row['jax_peak_rss_mb'] >= row['jax_model_mb']
  assert row['jax_peak_rss_mb'] == pytest.approx(row['jax_baseline_rss_mb'] + row['jax_model_mb'])
  header, _, line = bench.format_table([row]).splitlines()[:3]
  cells = dict(zip(header.split(' | '), line.split(' | ')))
  assert cells['JAX model MB'] == f'{row["jax_model_mb"]:,.0f}'
  assert cells['torch eager model MB'] == '–'


@pytest.mark.torch  # needs the optional 'bench' extra; run with `python -m pytest -m torch`
def test_the_twins_memory_run_starts_no_jax():
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO),
                                                                  os.environ.get('PYTHONPATH')]))}
  proc = subprocess.run(
      [sys.executable, '-m', 'jvae.bench', '--single=configs/test.py', '--torch_memory=eager',
       '--image_shape=8,8,1', '--steps=2', '--warmup=1'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True)
  memory = json.loads(proc.stdout.strip().splitlines()[-1])
  assert memory['variant'] == 'eager' and memory['steps'] == 3
  assert memory['model_mb'] > 0 and memory['peak_rss_mb'] >= memory['model_mb']
  # Building the twin with its own initialisation needs no JAX computation in this process.
  assert memory.get('jax_backend_initialized') is False
  row = {'config': 'test', 'jax_model_mb': 2 * memory['model_mb'],
         'jax_steps_model_mb': 1.5 * memory['model_mb']}
  bench.add_torch_memory(row, 'eager', memory)
  assert row['jax_model_over_torch_eager_model'] == pytest.approx(2.0)
  assert row['jax_steps_model_over_torch_eager_model'] == pytest.approx(1.5)


def test_default_configs_skip_test_and_sweeps():
  configs = bench.default_configs()
  assert 'configs/default.py' in configs
  assert 'configs/test.py' not in configs
  assert not any('sweep' in c for c in configs)


def test_the_step_profile_names_the_compiled_steps_ops_and_their_layers():
  setup = bench.setup_jax(bench.load_config(str(REPO / 'configs' / 'test.py')))
  profile = step_profile.profile_setup(setup, steps=2)
  ops = profile['ops']
  assert ops and profile['step_ms'] > 0
  instructions = step_profile.hlo_instructions(setup.step_fn.as_text())
  # Every timed op is an instruction of the compiled step, and together they fit in the step.
  assert all(op['op'] in instructions for op in ops), [op['op'] for op in ops]
  assert sum(op['ms_per_step'] for op in ops) <= 1.05 * profile['step_ms']
  assert [op['ms_per_step'] for op in ops] == sorted((op['ms_per_step'] for op in ops),
                                                     reverse=True)
  layers = {op['layer'] for op in ops}
  assert any('encoder/Conv_0' in layer for layer in layers), layers
  assert step_profile.describe(
      'jit(train_step)/transpose(jvp(VAE))/VAE.decode/decoder/ConvTranspose_1/dot_general') == (
          'backward', 'VAE.decode/decoder/ConvTranspose_1/dot_general')
  assert '| ms/step | share |' in step_profile.format_profile('test', profile, top=3)


def test_alternated_runs_blocks_and_drops_each_blocks_transition_step():
  calls = []

  def runner(name):
    def run():
      calls.append(name)
      return float(len(calls))  # each call's position in the whole sequence
    return run

  times = bench.alternated({'a': runner('a'), 'b': runner('b')}, rounds=3, block=3)
  # Rounds rotate who goes first: a a a b b b | b b b a a a | a a a b b b.
  assert ''.join(calls) == 'aaabbbbbbaaaaaabbb'
  # The first call of each block is not kept.
  assert times == {'a': [2.0, 3.0, 11.0, 12.0, 14.0, 15.0], 'b': [5.0, 6.0, 8.0, 9.0, 17.0, 18.0]}
  calls.clear()
  assert bench.alternated({'a': runner('a'), 'b': runner('b')}, rounds=2) == {
      'a': [1.0, 4.0], 'b': [2.0, 3.0]}
