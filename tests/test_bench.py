"""The JAX half of `python -m jvae.bench` on the tiny test config, in-process (no torch).

The PyTorch twin's equality checks live in the bench itself (`python -m jvae.bench --check`),
because torch is an optional extra that CI does not install.
"""

import math
import sys

from conftest import REPO

from jvae import bench


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
