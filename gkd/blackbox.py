"""The command `python -m gkd.blackbox`: imports a black-box teacher's JSONL (gkd.teachers.blackbox)."""

from gkd.teachers.blackbox import cli

if __name__ == "__main__":
  cli()
