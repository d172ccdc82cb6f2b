"""Entry point: python -m gkd.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.x=y ...]

Trains or distils as the config says; resumes from DIR if it holds a checkpoint, and only
reports a finished DIR. `--verify_workdir=DIR [--config=...]` says whether DIR can be resumed
(which checkpoint steps are intact, whether its config matches, whether it is finished).

A run that cannot go on (a bad config, flag or file, an unusable checkpoint or store, a busy
workdir, a non-finite loss, a teacher's scoring server that stays down) prints one `error:` line
and exits 1 (`--traceback` shows the traceback too; see gkd.cli); SIGTERM saves the current step
and exits 143.
"""

from absl import flags, logging
from ml_collections import config_flags

from gkd import cli
from gkd.errors import MissingFile, UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, exports).")
_VERIFY = flags.DEFINE_string("verify_workdir", None,
                              "Only report whether this workdir can be resumed (with --config: "
                              "whether its config matches).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-host runs (jax.distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of hosts (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This host's index (multi-host).")


def verify(workdir: str, config) -> int:
  import os

  from gkd.train import checkpoint
  if not os.path.isdir(workdir):
    raise MissingFile(f"--verify_workdir={workdir}: no such directory; nothing to resume.")
  report = checkpoint.verify(workdir, config)
  print(f"{workdir}: {'finished' if report['finished'] else 'not finished'}")
  print(f"  intact checkpoint steps: {report['intact'] or 'none'}")
  for step, error in report["bad"].items():
    print(f"  unreadable step {step}: {error}")
  if "config_diff" in report:
    print("  config: " + ("matches config.json" if not report["config_diff"] else
                          "differs from config.json in " + "; ".join(report["config_diff"])))
  resumable = report["finished"] or report["intact"] or not report["bad"]
  print(f"  resumable: {'yes' if resumable else 'no'}"
        + (f" (from step {report['intact'][-1]})" if report["intact"] and not report["finished"] else ""))
  return 0 if resumable else 1


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; flags are written --name=value.")
  logging.set_verbosity(logging.WARNING)  # absl defaults to INFO: backend-probing noise
  if _VERIFY.value:
    return verify(_VERIFY.value, _CONFIG.value)
  if _CONFIG.value is None or not _WORKDIR.value:
    raise UserError("--config and --workdir are required (or --verify_workdir=DIR).")
  import jax
  from gkd.train import compile_cache
  compile_cache.enable()  # a rerun loads its compiled programs (GKD_COMPILATION_CACHE=off: not)
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from gkd.train.loop import train
  train(_CONFIG.value, _WORKDIR.value)
  return 0


if __name__ == "__main__":
  cli.run(main)
