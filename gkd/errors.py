"""The errors a user can cause and fix, which the command line prints as one `error:` line.

Every expected failure (a bad config value, a missing or malformed file, an unusable checkpoint
or store) raises a subclass of `UserError` whose message names the file, field or flag at fault
and what to do. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """An expected failure with a message that says what to change."""


class ConfigError(UserError, ValueError):
  """A config field holds a value gkd cannot run with."""


class ServiceError(UserError):
  """A service the run depends on (a teacher's scoring server) failed or answered nonsense.

  The training loop stops at a checkpoint of the last finished step and says so; rerunning the
  same command resumes exactly once the service is back.
  """
