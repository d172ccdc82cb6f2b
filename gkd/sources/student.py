"""The student's own samples: on-policy distillation (mix.student = λ).

Samples follow the sampling settings (T=1, no top-k/top-p by default: the student's true
distribution) and no gradient flows through them; the teacher scores the exact sequences the
student trains on. Under speculative KD (`sampling.speculative_topk=K`, gkd.sampling.speculative)
the teacher vets every token as it is drawn, and the share it replaced is logged.
"""

from __future__ import annotations

from gkd import sampling
from gkd.sampling import speculative
from gkd.sources.base import Source


class OnPolicy(Source):
  name, letter, label = "student", "s", "student samples (on-policy)"

  def __init__(self, ctx):
    super().__init__(ctx)
    s, tok = ctx.config.sampling, ctx.tokenizer
    ids = dict(eos_id=tok.eos_id, pad_id=tok.pad_id)
    self.sampler = sampling.Sampler(ctx.student_graph, temperature=s.temperature, top_k=s.top_k,
                                    top_p=s.top_p, **ids)
    self.speculative = None
    if s.speculative_topk:
      teacher_graph, _ = ctx.teacher.generator(ctx.teacher_params())
      self.speculative = speculative.SpeculativeSampler(
          ctx.student_graph, teacher_graph, topk=s.speculative_topk, temperature=s.temperature,
          teacher_temperature=s.teacher_temperature, **ids)
    self.replacement_rate = None  # the last batch's, under speculative KD (a device scalar)

  def respond(self, batch, keys, rng):
    del keys
    args = (batch["prompt_tokens"], batch["prompt_mask"])
    length = batch["response_tokens"].shape[1]
    if self.speculative is None:
      out = self.sampler(self.ctx.student_params(), *args, rng=rng, max_new_tokens=length)
    else:
      _, teacher = self.ctx.teacher.generator(self.ctx.teacher_params())
      out = self.speculative(self.ctx.student_params(), teacher, *args, rng=rng,
                             max_new_tokens=length)
      self.replacement_rate = out.replacement_rate()
    return {"response_tokens": out.tokens, "response_mask": out.mask}

  def after_step(self, step):
    if self.replacement_rate is None:
      return {}, False
    rate, self.replacement_rate = self.replacement_rate, None  # fetched with the step's metrics
    return {"skd_replacement_rate": rate}, False
