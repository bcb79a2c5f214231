"""Metrics as JSON lines (`metrics.jsonl`) and TensorBoard event files, from process 0 only."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np


def _scalar(value: Any) -> float | int | None:
  array = np.asarray(value)
  if array.size != 1:
    return None
  item = array.item()
  return item if isinstance(item, (int, bool)) else float(item)


class MetricWriter:
  """Appends `{"step", "split", <name>: value}` lines; vectors are kept in JSON, not TensorBoard."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled and tensorboard:
      from tensorboardX import SummaryWriter  # Lazy: only the trainer's process 0 needs it.
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record: dict[str, Any] = {'step': int(step), 'split': split}
    for name, value in metrics.items():
      scalar = _scalar(value)
      if scalar is not None:
        record[name] = scalar
        if self._tb is not None:
          self._tb.add_scalar(f'{split}/{name}', scalar, int(step))
      else:
        record[name] = np.asarray(value).tolist()
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of a run's `metrics.jsonl`, in order."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_after(workdir: str, step: int) -> None:
  """Drops records logged after `step`, so a resumed run does not log those steps twice."""
  records = read_metrics(workdir)
  if not records:
    return
  kept = [r for r in records if r['step'] <= step]
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)
