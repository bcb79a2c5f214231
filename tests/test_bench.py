"""The JAX half of `python -m jvae.bench` on the tiny test config, in-process (no torch).

The PyTorch twin's equality checks live in the bench itself (`python -m jvae.bench --check`),
because torch is an optional extra that CI does not install.
"""

import math
import sys

from conftest import REPO

from jvae import bench, step_profile


def test_benchmark_row_has_positive_fields():
  torch_loaded = 'torch' in sys.modules
  row = bench.benchmark_config(str(REPO / 'configs' / 'test.py'), steps=3, warmup=1,
                               use_torch=False)
  assert row['config'] == 'test'
  assert row['batch'] == 16
  assert row['image_shape'] == [8, 8, 1]
  for field in ('params', 'jax_ms', 'jax_img_s', 'compile_s', 'pipeline_ms',
                'pipeline_resident_ms', 'jax_peak_rss_mb'):
    assert math.isfinite(row[field]) and row[field] > 0, (field, row[field])
  assert math.isfinite(row['pipeline_overhead_pct'])
  assert 'torch_eager_ms' not in row
  table = bench.format_table([row])
  assert table.splitlines()[2].startswith('| test | 16 | 8x8x1 |')
  # The JAX-only bench never imports torch (unless something else in this process already has).
  assert torch_loaded or 'torch' not in sys.modules


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
