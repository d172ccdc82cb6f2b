"""The command `python -m gkd.teacher_store`: writes an offline teacher store (gkd.teachers.store_writer)."""

from gkd.teachers.store_writer import cli

if __name__ == "__main__":
  cli()
