"""shakespeare task (in progress)."""

DEFAULTS = (("seed", 0),)


def generate(split, **params):
  raise NotImplementedError("shakespeare is not implemented yet")
