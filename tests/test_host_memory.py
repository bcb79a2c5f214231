"""jvae.host_memory: a step's large temporaries come back resident under reuse_step_buffers."""

import json
import subprocess
import sys

import jax

from jvae import host_memory

# A jitted function whose 64 MB concatenation is an XLA temporary (a dot's operand is always
# materialised), above glibc's largest mmap threshold (32 MB): each call allocates and frees it.
_PROBE = '''
import json, resource, sys
from jvae import host_memory
applied = host_memory.reuse_step_buffers() if sys.argv[1] == 'reuse' else False
import jax, jax.numpy as jnp
@jax.jit
def f(x):
  h = jnp.concatenate([jnp.sin(x), jnp.cos(x), x * x, jnp.exp(x)])
  return h @ jnp.ones(h.shape[1])
x = jnp.linspace(0.0, 1.0, 1024 * 4096).reshape(1024, 4096)
for _ in range(3):
  f(x).block_until_ready()
faults = []
for _ in range(7):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# The median: now and then a small allocation splits the kept buffer's hole and one call takes
# new pages (the fragmentation train.release_memory_every_steps is for).
print(json.dumps({'applied': applied, 'faults_per_call': sorted(faults)[len(faults) // 2],
                  'async': jax.config.values['jax_cpu_enable_async_dispatch']}))
'''


def _probe(script: str, *args: str) -> dict:
  """Runs `script` in a fresh Python (JAX's and glibc's settings are per process); the JSON it
  prints last."""
  out = subprocess.run([sys.executable, '-c', script, *args], capture_output=True, text=True,
                       check=True, timeout=300).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_reuse_step_buffers_removes_the_page_faults_of_a_step_temporary():
  system, reused = _probe(_PROBE, 'system'), _probe(_PROBE, 'reuse')
  # Without it, every call maps fresh pages for the 64 MB buffer: ~16,000 page faults.
  assert not system['applied'] and system['async']
  assert system['faults_per_call'] > 10_000, system
  assert reused['applied'] and not reused['async']
  assert reused['faults_per_call'] < 0.02 * system['faults_per_call'], (system, reused)


# Threads that allocate and live on, as XLA's pools and grain's threads do: which of them
# allocate in the main arena's heap, the `[heap]` mapping where single-device steps keep their
# temporaries. `small_limit` then sets a limit below the thread count, as glibc's default of 8
# arenas per core (16 on 2 cores) is for the ~24 threads of a training process.
_ARENA_PROBE = '''
import ctypes, ctypes.util, json, sys, threading
from jvae import host_memory
applied = host_memory.reuse_step_buffers()
libc = ctypes.CDLL(ctypes.util.find_library('c'))
if sys.argv[1] == 'small_limit':
  libc.mallopt(-8, 8)  # M_ARENA_MAX
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
addresses, release = [], threading.Event()
def allocate():
  addresses.append(libc.malloc(100_000))
  release.wait()
threads = [threading.Thread(target=allocate) for _ in range(48)]
for t in threads:
  t.start()
while len(addresses) < len(threads):
  pass
heap = next(l.split()[0] for l in open('/proc/self/maps') if l.rstrip().endswith('[heap]'))
low, high = (int(a, 16) for a in heap.split('-'))
print(json.dumps({'applied': applied, 'in_main_arena': sum(low <= a < high for a in addresses)}))
release.set()
'''


def test_reuse_step_buffers_keeps_other_threads_out_of_the_main_arena():
  # Past the limit, threads share arenas picked round-robin from the main one; the setting's
  # limit is above any thread count a training process reaches.
  default, reused = _probe(_ARENA_PROBE, 'small_limit'), _probe(_ARENA_PROBE, 'reuse')
  assert default['applied'] and default['in_main_arena'] >= 1, default
  assert reused == {'applied': True, 'in_main_arena': 0}, reused


def test_reuse_step_buffers_leaves_a_running_jax_alone():
  jax.numpy.zeros(1).block_until_ready()  # JAX's backends are up in this process
  assert not host_memory.reuse_step_buffers()
  assert jax.config.values['jax_cpu_enable_async_dispatch']


_TOOL_PROBE = '''
import json, sys
from jvae import cli
applied = cli.reuse_step_buffers_of(*sys.argv[1:])
import jax
print(json.dumps({'applied': applied,
                  'async': jax.config.values['jax_cpu_enable_async_dispatch']}))
'''


def test_tools_apply_the_setting_of_the_runs_they_reload(tmp_path):
  def run_dir(name, reuse):
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / 'config.json').write_text(json.dumps({'train': {'reuse_step_buffers': reuse}}))
    return str(workdir)

  def probe(*workdirs):
    return _probe(_TOOL_PROBE, *workdirs)

  on, off = run_dir('on', True), run_dir('off', False)
  assert probe(on) == {'applied': True, 'async': False}
  assert probe(on, off) == {'applied': False, 'async': True}  # every run must ask for it
  assert probe(str(tmp_path / 'missing')) == {'applied': False, 'async': True}


_CONFIG_PROBE = '''
import json, sys
import ml_collections
from jvae import host_memory
libc, called = host_memory._libc_function, []
host_memory._libc_function = lambda name: called.append(name) or libc(name)
config = ml_collections.ConfigDict({'train': {'reuse_step_buffers': sys.argv[1] == 'on'}})
applied = host_memory.apply_reuse_step_buffers(config)
import jax
print(json.dumps({'applied': applied, 'libc': called,
                  'async': jax.config.values['jax_cpu_enable_async_dispatch']}))
'''


def test_the_config_field_decides_whether_the_setting_is_applied():
  def probe(field):
    return _probe(_CONFIG_PROBE, field)

  # Off, before JAX starts: neither JAX's dispatch nor glibc's mallopt is touched.
  assert probe('off') == {'applied': False, 'libc': [], 'async': True}
  assert probe('on') == {'applied': True, 'libc': ['mallopt'], 'async': False}
