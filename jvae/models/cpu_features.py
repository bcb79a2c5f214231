"""The host CPU's instruction-set extensions, which decide some of the 'fast' conv forms.

XLA:CPU compiles for the CPU it runs on, and which exact conv reformulation is fastest depends
on the vector width it gets there (layers.fast_conv_form). Neither JAX nor a maintained library
exposes the host's feature flags, so they are read from /proc/cpuinfo (Linux); elsewhere the set
is empty and the rules fitted without AVX-512 apply.
"""

from __future__ import annotations

import functools
from pathlib import Path

CPUINFO = Path('/proc/cpuinfo')


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
  """The feature flags of the first processor in /proc/cpuinfo's text ('flags' on x86,
  'Features' on ARM); empty when there is no such line."""
  for line in cpuinfo.splitlines():
    name, _, value = line.partition(':')
    if name.strip() in ('flags', 'Features'):
      return frozenset(value.split())
  return frozenset()


@functools.cache
def host_cpu_flags() -> frozenset[str]:
  try:
    return parse_cpu_flags(CPUINFO.read_text())
  except OSError:
    return frozenset()


def host_has_avx512() -> bool:
  """Whether the host has AVX-512 Foundation (Intel since Skylake-SP, AMD since Zen 4)."""
  return 'avx512f' in host_cpu_flags()
