"""A jitted step compiled ahead of time at its first call, after which JAX's caches may go.

JAX's tracing, lowering and compile caches keep a jitted step's jaxprs, its MLIR module and the
executable for as long as the step function lives: on configs/default.py ~19 MB resident after
the compile (BENCHMARKS.md, "Thirteenth session"). A training run calls its steps with one
signature, so `CompiledStep(..., shed_compiler_memory=True)` compiles the step for its first
arguments, keeps that executable and clears the caches (`jax.clear_caches`: other jitted
functions recompile once when next called). `train.shed_compiler_memory` turns it on in the
trainer.

Not done: reloading the executable from its serialized form, which would keep ~15 MB less of it
resident (6 against 22 MB on configs/default.py); on jax 0.10.2 a reloaded executable of
configs/test.py's step fails at its first run ("Function pad_slice_fusion.14 not found") after
its donated input is gone.
"""

from __future__ import annotations

import gc
from typing import Any

import jax
from absl import logging


def shed_compiler_memory() -> None:
  """Clears JAX's tracing, lowering and compile caches.

  An executable that is still referenced (a CompiledStep's) stays loaded and runs as before.
  The freed memory goes back to the OS where the callers already return the compiler's
  (`host_memory.release_freed_memory`: the trainer after its first step and each evaluation,
  the bench after its compile).
  """
  jax.clear_caches()
  gc.collect()


class CompiledStep:
  """Calls `jitted` through an executable compiled ahead of time for its first arguments.

  Later calls whose shapes, dtypes or shardings differ from the first (which the executable
  rejects before it runs) go to `jitted` itself, so a CompiledStep accepts whatever the jitted
  function does; a training loop, whose arguments keep one signature, runs the AOT executable.
  """

  def __init__(self, jitted, name: str, shed_compiler_memory: bool = False):
    self.jitted = jitted
    self.name = name
    self.shed = shed_compiler_memory
    self._compiled = None
    self._warned = False

  def __call__(self, *args) -> Any:
    if self._compiled is None:
      self._compiled = self.jitted.lower(*args).compile()
      if self.shed:
        shed_compiler_memory()
    try:
      return self._compiled(*args)
    except (TypeError, ValueError) as e:  # not the compiled signature; nothing has run
      if not self._warned:
        logging.info('%s: called with other arguments than it was compiled for (%s); '
                     'those calls go through jax.jit', self.name, str(e).split('\n')[0])
        self._warned = True
      return self.jitted(*args)
