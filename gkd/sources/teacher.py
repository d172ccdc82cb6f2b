"""The teacher's own responses: sequence-level KD (mix.teacher).

By default each sample key (example id × samples per prompt + sample index) gets one teacher
generation, made the first time it is needed and kept: the targets are fixed outputs, as in
sequence-level KD, and the teacher samples on the first epoch only. With
`sampling.cache_teacher_samples=False` the teacher generates afresh at every step, as the
student does on-policy, so both see the same number of samples. A teacher whose responses are
stored already (an offline store) is read each time instead.

The cache is replicated: every host adds every host's new rows. So every host sees the same
cache (the decision to sample, a program all processes must enter together, is the same
everywhere), an example keeps its one generation whichever host reads it in a later epoch, and
the primary host's checkpoint holds the whole cache.
"""

from __future__ import annotations

import jax
import numpy as np

from gkd import sampling, sharding
from gkd.sources.base import Source

CACHE_KEYS = ("ids", "tokens", "mask")  # its arrays in the checkpoint


class TeacherCache:
  """Teacher-generated responses per sample key, first generation wins."""

  def __init__(self):
    self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def __len__(self):
    return len(self._rows)

  def missing(self, keys) -> bool:
    return any(int(i) not in self._rows for i in keys)

  def add(self, keys, tokens, mask):
    for i, t, m in zip(keys, np.asarray(tokens), np.asarray(mask)):
      self._rows.setdefault(int(i), (t, m))

  def lookup(self, keys):
    tokens, mask = zip(*(self._rows[int(i)] for i in keys))
    return np.stack(tokens), np.stack(mask)

  def state_dict(self) -> dict:
    ids = sorted(self._rows)
    if not ids:
      return {}
    return {"ids": np.asarray(ids, np.int64),
            "tokens": np.stack([self._rows[i][0] for i in ids]),
            "mask": np.stack([self._rows[i][1] for i in ids])}

  def load_state_dict(self, arrays: dict):
    self._rows = {}
    if all(k in arrays for k in CACHE_KEYS):
      self.add(arrays["ids"], arrays["tokens"], arrays["mask"])


class TeacherGenerations(Source):
  name, letter, label = "teacher", "t", "teacher generations"

  def __init__(self, ctx):
    super().__init__(ctx)
    s, tok = ctx.config.sampling, ctx.tokenizer
    generator = ctx.teacher.generator(ctx.teacher_params())
    self.sampler = None if generator is None else sampling.Sampler(
        generator[0], temperature=s.teacher_temperature, top_k=s.top_k, top_p=s.top_p,
        eos_id=tok.eos_id, pad_id=tok.pad_id)
    fixed = ctx.teacher.fixed_responses or not s.get("cache_teacher_samples", True)
    self.cache = None if fixed else TeacherCache()

  def _generate(self, batch, keys, rng):
    return self.ctx.teacher.respond(self.ctx.teacher_params(), batch, keys, rng,
                                    sampler=self.sampler)

  def respond(self, batch, keys, rng):
    rng = jax.random.fold_in(rng, 1)  # in a mixed step the student samples the same prompts
    if self.cache is None:
      tokens, mask = self._generate(batch, keys, rng)
    else:
      if self.cache.missing(keys["sample"]):
        tokens, mask = self._generate(batch, keys, rng)
        self.cache.add(keys["sample"], sharding.fetch(tokens), sharding.fetch(mask))
      tokens, mask = self.cache.lookup(keys["sample"])
    if isinstance(tokens, np.ndarray):
      return sharding.place_rows(self.ctx.mesh, {"response_tokens": tokens, "response_mask": mask})
    return {"response_tokens": tokens, "response_mask": mask}

  def state(self):
    return ({} if self.cache is None else self.cache.state_dict()), None

  def load(self, arrays, data):
    if self.cache is not None:
      self.cache.load_state_dict(arrays)
