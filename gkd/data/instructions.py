"""instructions task (in progress)."""

DEFAULTS = (("seed", 0),)


def generate(split, **params):
  raise NotImplementedError("instructions is not implemented yet")
