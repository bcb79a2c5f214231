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


def parse_cpu_field(cpuinfo: str, *names: str) -> str:
  """The value of the first processor's first line named one of `names` ('' when none)."""
  for line in cpuinfo.splitlines():
    name, _, value = line.partition(':')
    if name.strip() in names:
      return value.strip()
  return ''


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
  """The feature flags of the first processor in /proc/cpuinfo's text ('flags' on x86,
  'Features' on ARM); empty when there is no such line."""
  return frozenset(parse_cpu_field(cpuinfo, 'flags', 'Features').split())


@functools.cache
def _host_cpuinfo() -> str:
  try:
    return CPUINFO.read_text()
  except OSError:
    return ''


@functools.cache
def host_cpu_flags() -> frozenset[str]:
  return parse_cpu_flags(_host_cpuinfo())


def host_is_intel() -> bool:
  """Whether /proc/cpuinfo names Intel as the vendor ('GenuineIntel')."""
  return parse_cpu_field(_host_cpuinfo(), 'vendor_id') == 'GenuineIntel'


def host_has_avx512() -> bool:
  """Whether the host has AVX-512 Foundation (Intel since Skylake-SP, AMD since Zen 4)."""
  return 'avx512f' in host_cpu_flags()
