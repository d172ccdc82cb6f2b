"""Decisions that several processes (jax.distributed hosts) must take as one.

A process that decides alone what only it can see (a file, a lock, a read error) and then
enters a collective program differently from the others leaves them waiting forever in that
collective. So such a decision is made once, by the primary process (process 0), and shared:
`decided_by_primary(fn)` runs `fn` on the primary and gives every process its result, or
raises on every process the `UserError` it raised. `held_by_primary(cm)` does the same for
entering a context manager (the workdir lock), which the primary then holds. `all_agree`
combines a yes/no that each process found on its own, and `gathered_json` collects what each
process holds alone (its data-iterator state). With one process each is a plain call.
"""

from __future__ import annotations

import contextlib
import json

import jax
import numpy as np
from jax.experimental import multihost_utils

from gkd import errors


def is_primary() -> bool:
  return jax.process_index() == 0


def _error_classes() -> dict:
  found, todo = {}, [errors.UserError]
  while todo:
    cls = todo.pop()
    found[cls.__name__] = cls
    todo += cls.__subclasses__()
  return found


def broadcast_json(obj):
  """The primary's JSON-able `obj` on every process (every process must call this)."""
  if jax.process_count() == 1:
    return obj
  raw = np.frombuffer(json.dumps(obj).encode(), np.uint8) if is_primary() else np.zeros(0, np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(raw), np.int64)))
  padded = np.zeros(size, np.uint8)
  padded[:len(raw)] = raw
  return json.loads(bytes(multihost_utils.broadcast_one_to_all(padded)).decode())


def gathered_json(obj) -> list:
  """[obj of process 0, obj of process 1, ...] on every process, for JSON-able `obj`."""
  if jax.process_count() == 1:
    return [obj]
  raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.asarray(len(raw)))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[:len(raw)] = raw
  rows = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(rows[i, :int(n)]).decode()) for i, n in enumerate(sizes)]


def _outcome(fn) -> dict:
  try:
    return {"value": fn()}
  except errors.UserError as e:
    return {"error": type(e).__name__, "message": str(e)}


def _settle(outcome: dict):
  if "crash" in outcome:
    raise RuntimeError(f"process 0 failed ({outcome['crash']}); see its log.")
  if "error" in outcome:
    cls = _error_classes().get(outcome["error"], errors.UserError)
    raise cls(outcome["message"])
  return outcome["value"]


def decided_by_primary(fn):
  """`fn()` run on the primary process only; its JSON-able result (or its UserError) on all."""
  if jax.process_count() == 1:
    return fn()
  outcome = None
  if is_primary():
    try:
      outcome = _outcome(fn)
    except BaseException as e:  # a bug: the others must not wait for an answer that never comes
      broadcast_json({"crash": type(e).__name__})
      raise
  return _settle(broadcast_json(outcome))


@contextlib.contextmanager
def held_by_primary(manager):
  """Enters the context manager `manager` on the primary process only, holding it for the
  block; if entering it fails with a UserError, every process raises that error."""
  if jax.process_count() == 1:
    with manager:
      yield
    return
  with contextlib.ExitStack() as stack:
    def enter() -> None:
      stack.enter_context(manager)

    outcome = None
    if is_primary():
      try:
        outcome = _outcome(enter)
      except BaseException as e:
        broadcast_json({"crash": type(e).__name__})
        raise
    _settle(broadcast_json(outcome))
    yield


def all_agree(ok: bool) -> bool:
  """True on every process when `ok` is true on every process."""
  if jax.process_count() == 1:
    return bool(ok)
  return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(ok)))))
