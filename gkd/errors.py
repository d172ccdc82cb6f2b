"""The errors a user can cause and fix, which the command line prints as one `error:` line.

Every expected failure (a bad config value, a missing or malformed file, an unusable checkpoint
or store) raises a subclass of `UserError` whose message names the file, field or flag at fault
and what to do. Anything else is a bug and keeps its traceback. Each class also derives from
the built-in exception it refines (ValueError, FileNotFoundError, ...), so code that catches
those still catches it. `exit_code` is the command's exit status (gkd.cli).
"""


class UserError(Exception):
  """An expected failure with a message that says what to change."""

  exit_code = 1


class ConfigError(UserError, ValueError):
  """A config field holds a value gkd cannot run with."""


class DataError(UserError, ValueError):
  """A data file (or a dataset's metadata) holds something gkd cannot read: the message names
  the file and the line or row."""


class MissingFile(UserError, FileNotFoundError):
  """A file or directory that a config field or flag names does not exist."""


class ModelFileError(UserError, ValueError):
  """A model file (GGUF, safetensors, config.json, tokenizer.json) cannot be read."""


class StoreError(UserError, ValueError):
  """A teacher store cannot serve this run (written for other data, damaged, incomplete)."""


class ModelConfigError(ModelFileError):
  """A checkpoint's config (config.json, GGUF metadata) asks for something gkd does not compute."""


class ServiceError(UserError):
  """A service the run depends on (a teacher's scoring server) failed or answered nonsense.

  The training loop stops at a checkpoint of the last finished step and says so; rerunning the
  same command resumes exactly once the service is back.
  """
