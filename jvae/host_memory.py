"""Handing memory that XLA's compiler freed back to the operating system.

Compiling a train step on XLA:CPU allocates a few hundred MB of transient compiler state (LLVM
modules, buffer assignment). glibc's allocator keeps the freed pages in its arenas, so the
process's resident set stays that much higher for the whole run: for mnist_cvae_onehot it was
~280 MB over the pre-compile baseline after compile, and ~60 MB after `malloc_trim` (measured
with /proc/self/status around `.compile()`; BENCHMARKS.md). No maintained library wraps this,
hence the few lines of ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc_malloc_trim():
  name = ctypes.util.find_library('c')
  if name is None:
    return None
  try:
    return ctypes.CDLL(name).malloc_trim
  except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
    return None


def release_freed_memory() -> bool:
  """Returns the allocator's free pages to the OS (glibc `malloc_trim(0)`); False where the C
  library has no such call. Takes milliseconds; call it after a compile, not every step."""
  trim = _libc_malloc_trim()
  if trim is None:
    return False
  trim(0)
  return True
