"""Orbax checkpoints of everything a resumed run needs to repeat an uninterrupted one.

Each checkpoint step holds three items:
  state          the train state (step, params, optimizer state)
  data           JSON: the data iterator's state, counters (`truncated_total`) and the number
                 of teacher-cache rows
  teacher_cache  host-side arrays: the teacher-generation cache (`TeacherCache.state_dict()`)
                 and the replay buffer (`gkd.sources.replay`, keys "replay_*"); absent while empty
The teacher itself is never checkpointed (it's an input, not a result).

Orbax writes a step into a temporary directory and renames it when complete, so a kill
mid-save leaves the previous steps intact. Restoring goes from the newest step down: a step
that cannot be read (a truncated or lost file) is reported in one warning line, removed, and
the next older one is tried. A step whose arrays do not fit the current config (a changed
model size, say) is an error naming the workdir and the config fields that differ: resuming
it would mean silently training something else.

Multi-host: the primary process writes the JSON and NumPy items. So the run gathers what is
host-local before saving: `data` holds every process's data-iterator state (`loaders`, one per
process index, each restores its own), and the teacher cache is replicated on every host.
"""

import json
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from gkd import hosts, rundir
from gkd.errors import UserError

CACHE = "teacher_cache"
_log = logging.getLogger(__name__)  # not absl's: gkd.data silences that one


class CheckpointError(UserError, RuntimeError):
  """A workdir's checkpoints cannot be resumed with this config (the message says why)."""


def _key(entry) -> str:
  for attr in ("key", "name", "idx"):  # dict key, NamedTuple field, sequence index
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _flat(tree) -> dict:
  """{"a.b.0": leaf}: one spelling for dicts, NamedTuples and the dicts orbax saves them as."""
  return {".".join(_key(e) for e in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_mismatch(saved_tree, abstract) -> str | None:
  """The first parameter whose saved shape/dtype differs from the config's, or None."""
  saved, wanted = _flat(saved_tree), _flat(abstract)
  for key in sorted(saved.keys() | wanted.keys()):
    if key not in saved or key not in wanted:
      return f"{key} is {'missing from' if key not in saved else 'new to'} the checkpoint"
    a, b = saved[key], wanted[key]
    if tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype):
      return f"{key} is {a.dtype}{list(a.shape)} there but {b.dtype}{list(b.shape)} here"
  return None


# Fields that change how a run goes, not what it computes: a workdir resumes (or reports its
# finished result) under other values of these. A "mesh." field names the hardware; a scoring
# server may come back at another address (its model, teacher.served_model, is compared).
RUN_ONLY_FIELDS = ("train.progress_bar", "train.log_every", "train.checkpoint_every",
                   "train.keep_checkpoints", "eval.every", "data.data_dir", "mesh.",
                   "teacher.url", "teacher.timeout_s", "teacher.retries", "teacher.backoff_s",
                   "teacher.max_prompts")


def config_diff(workdir: str, config, *, common: bool = False) -> list[str]:
  """`field: saved -> new` for each config field that differs from WORKDIR/config.json
  (`common`: of the fields both have)."""
  path = os.path.join(workdir, rundir.CONFIG)
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      old = _flat(json.load(f))
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is unreadable ({e}); move the workdir aside and start "
                          "over, or restore the file.") from None
  new = _flat(json.loads(config.to_json_best_effort()))
  keys = old.keys() & new.keys() if common else old.keys() | new.keys()
  return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(keys) if old.get(k) != new.get(k)]


def check_same_config(workdir: str, config) -> None:
  """Raises CheckpointError when WORKDIR/config.json (a run begun there, finished or not) was
  written by a config that computes something else than `config`. Fields that only one of
  them has (added to or removed from gkd since the run was written) are not compared."""
  diff = [d for d in config_diff(workdir, config, common=True)
          if not d.startswith(RUN_ONLY_FIELDS)]
  if diff:
    raise CheckpointError(
        f"{workdir} holds a run of another config ({'; '.join(diff)}); its checkpoints and "
        f"results belong to that one. Use a new workdir, or rerun with the saved config "
        f"({rundir.CONFIG} there).")


class Checkpointer:
  def __init__(self, workdir: str, *, every: int, keep: int):
    self.every = every
    self.workdir = workdir
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                CACHE: ocp.StandardCheckpointHandler()}
    self._manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, rundir.CHECKPOINTS)),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        # Handlers named up front: without them a fresh process cannot read an item's metadata.
        item_handlers=handlers,
    )
    # Restores go to the handlers themselves: the manager's restore ends in a barrier, where
    # the other processes would wait forever for one whose read failed (see `restore`).
    self._reader = ocp.CompositeCheckpointHandler(**handlers)

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def due(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, state, data_state: dict, teacher_cache: dict, *, force: bool = False):
    if not (force or self.due(step)) or step in self._manager.all_steps():
      return
    rows = max((len(v) for v in teacher_cache.values()), default=0)
    args = {"state": ocp.args.StandardSave(state),
            "data": ocp.args.JsonSave({**data_state, "teacher_cache_rows": {CACHE: rows}})}
    if rows:  # orbax cannot save an empty tree
      args[CACHE] = ocp.args.StandardSave(teacher_cache)
    self._manager.save(step, args=ocp.args.Composite(**args), force=True)

  def _read(self, step: int, **args):
    return self._reader.restore(self._manager.directory / str(step), ocp.args.Composite(**args))

  def _restore_step(self, step: int, abstract_state):
    data = self._read(step, data=ocp.args.JsonRestore())["data"]
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    rows = data.get("teacher_cache_rows", {}).get(CACHE)
    if rows is None:  # written before the count was recorded: is the item on disk?
      rows = os.path.isdir(os.path.join(str(self._manager.directory), str(step), CACHE))
    if rows:
      args[CACHE] = ocp.args.StandardRestore()
    restored = self._read(step, **args)
    cache = jax.tree.map(np.asarray, dict(restored[CACHE])) if CACHE in args else {}
    return restored["state"], data, cache

  def _check_step(self, step: int, abstract_state, config) -> str | None:
    """None when step's saved state fits `abstract_state`; why it is unreadable otherwise.
    Raises CheckpointError when it does not fit this config."""
    try:
      saved = self._manager.item_metadata(step)["state"]
      if saved is None:
        raise ValueError("no state item")
    except Exception as e:  # noqa: BLE001 — any read failure means this step is unusable
      return _first_line(e)
    mismatch = _shape_mismatch(saved.tree if hasattr(saved, "tree") else saved, abstract_state)
    if mismatch:
      diff = config_diff(self.workdir, config) if config is not None else []
      raise CheckpointError(
          f"{self.workdir}: checkpoint step {step} does not fit this config "
          f"({'; '.join(diff) or 'config.json does not say why'}): {mismatch}. "
          "Use a new workdir, or rerun with the saved config.")
    return None

  def restore(self, abstract_state, config=None):
    """(step, state, data_state, teacher_cache) of the newest intact step, or None if none.

    Raises CheckpointError when a step does not fit `abstract_state` (naming the config fields
    that differ from the saved config.json, when `config` is given) or when every step is bad.

    With several processes every choice is made once: the primary lists the steps and checks
    each one's metadata; every process then reads its part of the chosen step, and the step is
    used only if every process could read it. Otherwise all of them drop it (the primary
    deletes it) and go on to the previous one together.
    """
    bad = []
    for step in reversed(hosts.decided_by_primary(self.all_steps)):
      why = hosts.decided_by_primary(lambda: self._check_step(step, abstract_state, config))
      if why is None:
        try:
          restored = self._restore_step(step, abstract_state)
        except Exception as e:  # noqa: BLE001
          restored, why = None, _first_line(e)
        if hosts.all_agree(restored is not None):
          return (step, *restored)
        why = why or "unreadable on another process"
      self._drop(step, why, bad)
    if bad:
      raise CheckpointError(f"{self.workdir}: no intact checkpoint (steps {bad} are unreadable); "
                            f"move {rundir.CHECKPOINTS}/ aside to start over.")
    return None

  def _drop(self, step: int, why: str, bad: list):
    """Reports an unreadable step in one line and deletes it, so a later save can replace it
    (every process calls this; orbax lets the primary delete)."""
    _log.warning("checkpoint step %d in %s is unreadable (%s); removed it, trying the "
                 "previous step.", step, self.workdir, why)
    bad.append(step)
    self._manager.delete(step)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def verify(workdir: str, config=None) -> dict:
  """Whether `workdir` can be resumed, without changing it.

  Returns {"finished": bool, "intact": [steps], "bad": {step: error}, "config_diff": [...]}
  (`config_diff` only when a config is given). Every step is read in full, onto one device.
  """
  report = {"finished": os.path.exists(os.path.join(workdir, rundir.FINAL_METRICS)),
            "intact": [], "bad": {}}
  if config is not None:
    report["config_diff"] = config_diff(workdir, config)
  if not os.path.isdir(os.path.join(workdir, rundir.CHECKPOINTS)):
    return report
  ckpt = Checkpointer(workdir, every=0, keep=None)
  for step in ckpt.all_steps():
    try:
      meta = ckpt._manager.item_metadata(step)["state"]
      one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta.tree)
      ckpt._restore_step(step, abstract)
      report["intact"].append(step)
    except Exception as e:  # noqa: BLE001
      report["bad"][step] = _first_line(e)
  ckpt.close()
  return report


def _first_line(error: Exception) -> str:
  return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"
