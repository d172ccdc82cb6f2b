"""How gkd's commands fail: one `error:` line for every failure a user can cause.

`run(main)` is absl's `app.run` for every gkd command (gkd.main, gkd.sweep, gkd.teacher_store,
gkd.blackbox, gkd.train.memory, gkd.eval.gate). It defines `--traceback` and prints, on stderr,
one line `error: <what is wrong and what to do>` for
  * a `gkd.errors.UserError` raised by the command (exit status: its `exit_code`, 1 unless
    it says otherwise, e.g. 143 for a SIGTERM that saved the run);
  * a flag the command does not know or cannot parse, a config file that cannot be loaded,
    and a `--config.x.y=v` override naming a field the config lacks (exit status 2).
`--traceback` shows the traceback of those too. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import re
import sys

from absl import app, flags

from gkd.errors import UserError

USAGE_EXIT = 2  # a command line that names no valid run


def run(main) -> None:
  """Runs `main(argv)` under absl with the error contract of the module docstring."""
  if "traceback" not in flags.FLAGS:
    flags.DEFINE_bool("traceback", False, "On an error, print its traceback, not only its line.")
  app.run(_reporting(main), flags_parser=_parse)


def one_line(message: str) -> str:
  """A message as one line: a Python traceback inside it is cut to its last line."""
  lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
  if any(line.startswith("Traceback (most recent call last)") for line in lines):
    lines = [lines[0].rstrip(":"), lines[-1]]
  return " ".join(lines)


def _fail(message: str, code: int):
  print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(code)


def _wants_traceback(argv) -> bool:
  return any(a in ("--traceback", "--traceback=true", "--traceback=1") for a in argv[1:])


def _reporting(main):
  def reported(argv):
    try:
      return main(argv)
    except UserError as e:
      if flags.FLAGS.traceback:
        raise
      _fail(str(e), e.exit_code)
  return reported


def _parse(argv):
  """absl's flag parsing, with a bad flag, config file or override as one line."""
  try:
    args = flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError) as e:
    if _wants_traceback(argv):
      raise
    _fail(_flag_problem(e, argv), USAGE_EXIT)
  for name in flags.FLAGS:
    try:  # a config file that failed to load is a value that raises on any attribute access
      getattr(flags.FLAGS[name].value, "lock", None)
    except OSError as e:
      if _wants_traceback(argv):
        raise
      reason = str(e).strip().splitlines()[-1].strip()
      _fail(f"--{name}: cannot load the config file ({reason}); pass an existing "
            "configs/NAME.py[:ARG].", USAGE_EXIT)
  return args


def _flag_problem(error: Exception, argv) -> str:
  """The one-line message for an exception raised while the flags were parsed."""
  if isinstance(error, (KeyError, AttributeError)):  # ml_collections: an override of no field
    text = error
    while isinstance(text, BaseException) and text.args:  # AttributeError(KeyError(message))
      text = text.args[0]
    text = str(text)
    field = re.search(r"'([^']+)'", text)
    key = field.group(1) if field else text.strip()
    hint = " ".join(line.strip() for line in text.splitlines()[1:] if line.strip())
    named = [a.split("=", 1)[0] for a in argv[1:]
             if a.startswith("--") and a.split("=", 1)[0].endswith(f".{key}")]
    return (f"{named[0] if named else 'a --config override'}: the config has no field "
            f"{key!r}{f' ({hint})' if hint else ''}; the config file and "
            "gkd/train/defaults.py list the fields.")
  return one_line(str(error))
