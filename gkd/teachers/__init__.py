"""Teachers: what a distillation run learns from, behind one protocol (gkd.teachers.base).

  kind       what it is                                              module       chosen by
  labels     no teacher: the references' tokens (supervised FT)      labels.py    mode='sft'
  live       one teacher model                                       live.py      (default)
  ensemble   several weighted teacher models                         ensemble.py  config.teachers
  uld        a teacher model with another tokenizer                  uld.py       objective.cross_tokenizer
  store      teacher outputs written to disk once                    store.py     config.teacher_store

The store's writers sit beside it (`python -m gkd.teacher_store` = store_writer.py, and
`python -m gkd.blackbox` = blackbox.py for a teacher that cannot be run), and build.py builds the
run's models from a config. A new kind is one module with a `Teacher` subclass and a `build`
classmethod, one entry in KINDS and one line in `kind_of`.
"""

from __future__ import annotations

from gkd.teachers import build as models_lib
from gkd.teachers.base import StudentView, Teacher
from gkd.teachers.ensemble import Ensemble
from gkd.teachers.labels import Labels
from gkd.teachers.live import Live
from gkd.teachers.store import Stored
from gkd.teachers.uld import CrossTokenizer

KINDS = {cls.kind: cls for cls in (Labels, Live, Ensemble, CrossTokenizer, Stored)}

__all__ = ["KINDS", "StudentView", "Teacher", "check", "from_config", "kind_of"]


def check(config) -> list[str]:
  """Problems with the config's teachers, each naming its field (every kind checks its fields)."""
  return [problem for cls in KINDS.values() for problem in cls.check(config)]


def kind_of(config) -> str:
  """The teacher kind a config asks for (a key of KINDS)."""
  if config.mode == "sft":
    return Labels.kind
  if config.get("teacher_store", ""):
    return Stored.kind
  if config.objective.get("cross_tokenizer", "") == "uld":
    return CrossTokenizer.kind
  if len(models_lib.teacher_configs(config)) > 1:
    return Ensemble.kind
  return Live.kind


def from_config(config, built: models_lib.Built, mesh) -> tuple[Teacher, object]:
  """(teacher, its params placed on `mesh`) for a config whose models `built` holds."""
  return KINDS[kind_of(config)].build(config, built, mesh)
