"""What stops a run early, and how: a non-finite loss, and SIGTERM.

Both stop at a step boundary with a checkpoint that is known good:
- The loop fetches metrics one step late, so a NaN shows up on the host after the next step
  was already dispatched. A checkpoint is written only once the metrics of the step that
  produced it were fetched and found finite (a save synchronizes with the device anyway, so
  this adds no stall). A NaN therefore never reaches a checkpoint: the run stops with
  `NonFiniteError`, and the newest checkpoint is the last good step.
- SIGTERM (a preempted job, a scheduler's stop) only sets a flag; the loop finishes the
  current step, saves it and raises `Preempted`. `gkd.main` exits with 143 (128 + SIGTERM):
  the run is not finished, so a sweep or scheduler must not count it as a success, and
  rerunning the same command resumes from the saved step. With several processes the stop
  must be one decision: a process that stops alone leaves the others waiting forever in the
  next step's collectives. So the processes compare their flags (`stop_agreed`) every
  `train.log_every` steps and stop together if any of them was signalled.
"""

import contextlib
import math
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from gkd.errors import UserError

GUARDED = ("loss", "grad_norm")  # train metrics that must stay finite
SIGTERM_EXIT = 128 + signal.SIGTERM


class NonFiniteError(UserError, RuntimeError):
  """The loss or the gradient norm became NaN or infinite."""


class Preempted(UserError, RuntimeError):
  """SIGTERM arrived; the current step was saved."""

  exit_code = SIGTERM_EXIT


def check_finite(step: int, metrics: dict, *, workdir: str, last_saved: int | None) -> None:
  """Raises NonFiniteError naming the step, the bad metrics and the checkpoint to resume from."""
  bad = {k: float(metrics[k]) for k in GUARDED if k in metrics and not math.isfinite(float(metrics[k]))}
  if bad:
    where = f"step {last_saved}" if last_saved else "none yet"
    raise NonFiniteError(
        f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at step {step}; stopped "
        f"without saving it. Last good checkpoint in {workdir}: {where}. Lower "
        "optim.learning_rate or check the data before resuming.")


class StopFlag:
  """Set by SIGTERM while installed (main thread only; elsewhere it stays unset)."""

  def __init__(self):
    self.set = False

  def _handler(self, signum, frame):
    del signum, frame
    self.set = True

  @contextlib.contextmanager
  def installed(self):
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = signal.signal(signal.SIGTERM, self._handler)
    try:
      yield self
    finally:
      signal.signal(signal.SIGTERM, previous)


def stop_agreed(flag: bool, step: int, every: int) -> bool:
  """Whether to stop after `step`, decided the same way on every process.

  One process decides alone. Several compare flags only at multiples of `every`: the
  comparison is a collective that waits for the step in flight, so doing it every step would
  undo the one-step-late metric fetch.
  """
  if jax.process_count() == 1:
    return flag
  if step % every:
    return False
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
