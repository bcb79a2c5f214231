"""Soak check: a long training run whose memory and open files must stay flat.

Runs `train.py` in a subprocess and samples its resident memory (RSS) and open file descriptors
every few seconds, then prints a table and the verdict: peak RSS at the end within 10% of the
value after the first checkpoint, and no growth in open files.

  python benchmarks/soak.py --minutes 30 --workdir /tmp/jvae_soak

Not part of the test suite: it takes as long as it is told to.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _rss_mb(pid: int) -> float:
  with open(f'/proc/{pid}/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  return float('nan')


def _open_files(pid: int) -> int:
  return len(os.listdir(f'/proc/{pid}/fd'))


def _checkpoints(workdir: pathlib.Path) -> int:
  path = workdir / 'checkpoints'
  return len([p for p in path.iterdir() if p.name.isdigit()]) if path.exists() else 0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--minutes', type=float, default=30)
  parser.add_argument('--workdir', default='/tmp/jvae_soak')
  parser.add_argument('--config', default=str(REPO / 'configs' / 'default.py'))
  parser.add_argument('--checkpoint_every_steps', type=int, default=1000)
  parser.add_argument('--sample_seconds', type=float, default=5)
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, str(REPO / 'train.py'), '--config', args.config,
             '--workdir', str(workdir), '--config.train.num_train_steps=100000000',
             f'--config.train.checkpoint_every_steps={args.checkpoint_every_steps}',
             f'--config.train.eval_every_steps={args.checkpoint_every_steps}',
             '--config.train.progress_bar=False']
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  start = time.time()
  samples = []
  try:
    while time.time() - start < args.minutes * 60 and process.poll() is None:
      samples.append({'seconds': round(time.time() - start, 1), 'rss_mb': _rss_mb(process.pid),
                      'open_files': _open_files(process.pid),
                      'checkpoints_written': _checkpoints(workdir)})
      time.sleep(args.sample_seconds)
  finally:
    process.terminate()
    process.wait(timeout=120)
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  steps = max((r['step'] for r in records), default=0)
  first = next((s for s in samples if s['checkpoints_written'] >= 1), samples[0])
  last = samples[-1]
  peak_after = max(s['rss_mb'] for s in samples if s['seconds'] >= first['seconds'])
  print('| minute | RSS (MB) | open files |\n|---|---|---|')
  for minute in range(int(last['seconds'] // 60) + 1):
    sample = min(samples, key=lambda s: abs(s['seconds'] - 60 * minute))
    print(f"| {minute} | {sample['rss_mb']:.0f} | {sample['open_files']} |")
  growth = peak_after / first['rss_mb'] - 1
  print(f"\nsteps trained: {steps}; checkpoint saves: {steps // args.checkpoint_every_steps}")
  print(f"RSS after the first checkpoint: {first['rss_mb']:.0f} MB at {first['seconds']:.0f} s; "
        f"peak afterwards {peak_after:.0f} MB ({100 * growth:+.1f}%); at the end "
        f"{last['rss_mb']:.0f} MB")
  print(f"open files after the first checkpoint: {first['open_files']}; at the end: "
        f"{last['open_files']}")
  ok = growth <= 0.10 and last['open_files'] <= first['open_files']
  print('verdict:', 'flat' if ok else 'GROWING')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
