"""Entry point: python -m gkd.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.x=y ...]

Trains or distils as the config says; resumes from DIR if it holds a checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, exports).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-host runs (jax.distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of hosts (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This host's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # absl defaults to INFO: backend-probing noise
  import jax
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from gkd.train.loop import train
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
