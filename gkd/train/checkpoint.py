"""Orbax checkpoints of everything a resumed run needs to repeat an uninterrupted one.

Each checkpoint holds the train state (step, params, optimizer state), the data iterator's
state and the teacher-generation cache. Orbax writes into a temporary directory and renames
it when complete, so a run killed mid-save resumes from the previous complete step. The
teacher is never checkpointed (it's an input, not a result).
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from gkd import rundir


class Checkpointer:
  def __init__(self, workdir: str, *, every: int, keep: int):
    self.every = every
    self._manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, rundir.CHECKPOINTS)),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=("state", "data", "teacher_cache"),
    )

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict, teacher_cache: dict, *, force: bool = False):
    if not force and (self.every <= 0 or step % self.every):
      return
    if step in self._manager.all_steps():
      return
    args = {"state": ocp.args.StandardSave(state), "data": ocp.args.JsonSave(data_state)}
    if teacher_cache:  # orbax cannot save an empty tree
      args["teacher_cache"] = ocp.args.StandardSave(teacher_cache)
    self._manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, abstract_state, step: int | None = None):
    """Returns (state, data_state, teacher_cache) of `step` (default: latest)."""
    step = self._manager.latest_step() if step is None else step
    items = self._manager.item_metadata(step)
    args = {"state": ocp.args.StandardRestore(abstract_state), "data": ocp.args.JsonRestore()}
    has_cache = items.get("teacher_cache") is not None  # absent when nothing was cached
    if has_cache:
      args["teacher_cache"] = ocp.args.StandardRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    cache = jax.tree.map(np.asarray, dict(restored["teacher_cache"])) if has_cache else {}
    return restored["state"], restored["data"], cache

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
