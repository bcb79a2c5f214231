"""How the process's host memory is allocated and handed back on XLA:CPU.

Two things, both glibc's allocator settings that no maintained library wraps (hence the few
lines of ctypes):

`reuse_step_buffers`: every execution of a compiled step allocates its temporaries as one
buffer (98 MB for mnist_cvae_onehot) and frees it when the step ends. glibc serves an allocation
that large with fresh pages from mmap (its threshold is at most 32 MB, and the per-thread arenas
of JAX's dispatch threads cannot hold it at all) and unmaps it on free, so every step the kernel
zero-filled ~25,000 new pages: a fifth of the step's CPU time as system time, measured with
getrusage and strace (BENCHMARKS.md). Running single-device steps on the calling thread (whose
arena is glibc's main one) with mmap and heap trimming off makes the freed buffer come back
from the free list, already resident.

`release_freed_memory`: compiling a train step on XLA:CPU allocates a few hundred MB of
transient compiler state (LLVM modules, buffer assignment), which glibc keeps in its arenas
after it is freed: for mnist_cvae_onehot ~280 MB over the pre-compile baseline after the
compile, ~60 MB after `malloc_trim` (/proc/self/status around `.compile()`; BENCHMARKS.md). The
trainer trims once after its first step and after each evaluation; `malloc_trim` also returns
free pages inside the heap, so it works with `reuse_step_buffers`' settings too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import TYPE_CHECKING

from absl import logging

if TYPE_CHECKING:
  import ml_collections

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# The largest M_TRIM_THRESHOLD mallopt takes (an int): free memory at the heap's top is only
# returned past 2 GB, in practice never; release_freed_memory still returns it on purpose.
_NEVER_TRIM = 2**31 - 1
# More arenas than the threads a process runs (XLA's pools, grain's prefetch threads: ~24 here),
# so that every thread that allocates gets an arena of its own. glibc's default limit is 8 per
# core, 16 on 2 cores; past it, a new thread shares an arena picked round-robin from the main
# one, which is where a single-device step's temporaries live (the calling thread's). On 2
# cores, that made grain's device-prefetch thread allocate its batches in the main arena, in the
# hole the step had just freed; a batch waiting in the buffer then kept the step's buffer out of
# its hole, and the steps of mnist_cvae_onehot fed by the pipeline peaked ~100 MB higher than
# device-resident ones (BENCHMARKS.md). An arena is a 64 MB reservation of address space, made
# resident only as its thread allocates.
_ARENA_MAX = 1024


@functools.cache
def _libc_function(name: str):
  library = ctypes.util.find_library('c')
  if library is None:
    return None
  try:
    return getattr(ctypes.CDLL(library), name)
  except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to set
    return None


def reuse_step_buffers() -> bool:
  """Makes each step's XLA:CPU temporaries reuse the previous step's resident memory.

  Sets `jax_cpu_enable_async_dispatch` off (single-device computations then run on the calling
  thread; multi-device ones are dispatched as before) and glibc's mmap count and trim threshold
  so that freed buffers stay in the heap, and its arena limit (`_ARENA_MAX`) so that no other
  thread allocates in the heap those buffers come back to. Process-wide, and only possible
  before JAX starts its backends (glibc fixes its arena limit once a process has 8 arenas):
  returns False, and logs why, when they already run or the C library is not glibc.
  mnist_cvae_onehot's step went from 144.9 to 111.2 ms (BENCHMARKS.md).
  """
  import jax
  from jax._src import xla_bridge  # backends_are_initialized: not exported, used by JAX itself

  if xla_bridge.backends_are_initialized():
    logging.info('reuse_step_buffers: JAX is already running; the process keeps its settings')
    return False
  mallopt = _libc_function('mallopt')
  if mallopt is None:
    logging.info('reuse_step_buffers: no glibc mallopt here; the process keeps its settings')
    return False
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  return (bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
          and bool(mallopt(_M_ARENA_MAX, _ARENA_MAX)))


def apply_reuse_step_buffers(config: ml_collections.ConfigDict) -> bool:
  """`reuse_step_buffers()` if the config's `train.reuse_step_buffers` asks for it, else
  nothing. Returns whether the setting took effect (False when the field is off)."""
  return bool(config.train.reuse_step_buffers) and reuse_step_buffers()


def release_freed_memory() -> bool:
  """Returns the allocator's free pages to the OS (glibc `malloc_trim(0)`); False where the C
  library has no such call. Takes milliseconds; call it after a compile, not every step."""
  trim = _libc_function('malloc_trim')
  if trim is None:
    return False
  trim(0)
  return True
