"""A read error on one host, for tests/test_multiprocess.py: a process started with this folder
on PYTHONPATH and GKD_FAULT_UNREADABLE_STEP=N fails to read the train state of checkpoint
step N (as a host with a bad disk or a stale network-file-system cache would), while the other
processes read it. Python imports `sitecustomize` at start-up; nothing else changes."""

import os

_STEP = os.environ.get("GKD_FAULT_UNREADABLE_STEP")

if _STEP:
  import orbax.checkpoint as ocp

  _restore = ocp.CompositeCheckpointHandler.restore

  def _failing_restore(self, directory, args=None):
    if os.path.basename(str(directory)) == _STEP and args is not None and "state" in args.keys():
      raise OSError(f"injected read error in {directory} (this process only)")
    return _restore(self, directory, args)

  ocp.CompositeCheckpointHandler.restore = _failing_restore
