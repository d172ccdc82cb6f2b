"""Checks a config before anything runs, so a bad sweep point fails in milliseconds, clearly.

Each check names the field. The objective's own checks live with it (`gkd.objectives.Objective`
and `gkd.divergences.get`); their errors are reported here under `objective.`.
"""

import jax

from gkd import divergences, sharding, sources, teachers
from gkd.errors import ConfigError
from gkd.objectives import Objective, layer_distill
from gkd.teachers.build import MODEL_SOURCES

MODES = ("gkd", "sft")


def _check(ok: bool, message: str):
  if not ok:
    raise ConfigError(message)


def validate(config, *, num_devices: int | None = None) -> None:
  """Raises ConfigError naming the first bad field. Does not touch models or data."""
  _check(config.mode in MODES, f"mode={config.mode!r}; expected one of {MODES}.")
  for role in ("teacher", "student"):
    src = config[role].source
    _check(src in MODEL_SOURCES, f"{role}.source={src!r}; expected one of {MODEL_SOURCES}.")
    _check(src != "derive" or role == "student", "teacher.source='derive' is not possible.")
    _check(src != "pretrained" or config[role].path,
           f"{role}.source={src!r} needs {role}.path.")
  if config.student.source == "derive":
    _check(bool(config.student.derive_every_k) != bool(list(config.student.derive_layers)),
           "student.source='derive' needs exactly one of derive_every_k, derive_layers.")

  problems = teachers.check(config) + sources.check(config)
  _check(not problems, problems[0] if problems else "")

  mix = config.mix
  _check(config.mode == "gkd" or mix.dataset == 1.0,
         "mode='sft' trains on the dataset only: set mix.dataset=1.")

  obj = config.objective
  _check(obj.divergence in divergences.NAMES,
         f"objective.divergence={obj.divergence!r} is unknown; expected one of {divergences.NAMES}.")
  try:
    Objective.from_config(obj)
  except ValueError as e:
    raise ConfigError(f"objective (divergence={obj.divergence!r}, divergence_kw="
                      f"{dict(obj.divergence_kw)}): {e}") from None

  try:  # block indices are checked against the models once they are built
    layer_map = layer_distill.parse(obj.get("layer_map", ""))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _check(not layer_map or (config.mode == "gkd" and obj.hidden_loss),
         f"objective.layer_map={obj.layer_map!r} needs mode='gkd' and objective.hidden_loss "
         "('cosine' or 'mse'), the loss applied to each pair.")

  _check(not obj.get("rl_weight", 0.0) or (config.mode == "gkd" and config.mix.student > 0
                                           and not obj.chunk_size),
         f"objective.rl_weight={obj.get('rl_weight')} rewards the student's own samples: it "
         "needs mode='gkd', mix.student > 0 and objective.chunk_size=0.")

  _check(int(config.lora.rank) == config.lora.rank and config.lora.rank >= 0
         and config.lora.alpha > 0 and (not config.lora.rank or config.lora.targets.strip()),
         f"lora: rank={config.lora.rank!r} must be an integer >= 0, alpha={config.lora.alpha!r} "
         f"> 0, and targets={config.lora.targets!r} name modules when rank > 0.")

  smp = config.sampling
  _check(smp.temperature >= 0 and smp.teacher_temperature >= 0, "sampling temperatures must be >= 0.")
  _check(smp.top_k >= 0 and 0 < smp.top_p <= 1, "sampling.top_k must be >= 0 and top_p in (0, 1].")
  if smp.speculative_topk:
    _check(smp.speculative_topk > 0 and config.mode == "gkd" and mix.student > 0,
           f"sampling.speculative_topk={smp.speculative_topk}: speculative KD vets on-policy "
           "samples, so it needs K > 0, mode='gkd' and mix.student > 0.")
    _check(config.objective.get("cross_tokenizer", "") != "uld",
           "sampling.speculative_topk: the teacher vets the student's tokens, so both need one "
           "vocabulary; it cannot be combined with objective.cross_tokenizer='uld'.")
    _check(smp.top_k == 0 and smp.top_p == 1.0,
           "sampling.speculative_topk: the teacher's top-K does the filtering; leave "
           "sampling.top_k=0 and top_p=1.")
  prompts, hosts = config.train.batch_size // max(smp.num_samples, 1), jax.process_count()
  _check(smp.num_samples >= 1 and config.train.batch_size % smp.num_samples == 0
         and prompts % hosts == 0,
         f"sampling.num_samples={smp.num_samples} must be >= 1 and divide train.batch_size="
         f"{config.train.batch_size} into a number of prompts divisible by the {hosts} host(s).")

  opt, train = config.optim, config.train
  _check(opt.learning_rate > 0, f"optim.learning_rate={opt.learning_rate} must be > 0.")
  _check(opt.schedule in ("cosine", "constant"), f"optim.schedule={opt.schedule!r}.")
  _check(opt.grad_accum_steps >= 1, "optim.grad_accum_steps must be >= 1.")
  _check(opt.warmup_steps >= 0, f"optim.warmup_steps={opt.warmup_steps} must be >= 0.")
  _check(train.num_steps >= 1 and train.batch_size >= 1, "train.num_steps and train.batch_size must be >= 1.")
  _check(train.log_every >= 1, f"train.log_every={train.log_every} must be >= 1.")
  _check(train.checkpoint_every >= 0, f"train.checkpoint_every={train.checkpoint_every} must be >= 0 "
         "(0: only the final step).")
  _check(train.keep_checkpoints >= 1, f"train.keep_checkpoints={train.keep_checkpoints} must be >= 1 "
         "(it is how many checkpoints survive).")
  _check(config.eval.every >= 0 and config.eval.max_new_tokens >= 0,
         "eval.every and eval.max_new_tokens must be >= 0.")
  _check(config.data.max_prompt_len >= 1 and config.data.max_response_len >= 1,
         "data.max_prompt_len and data.max_response_len must be >= 1.")

  available = jax.device_count() if num_devices is None else num_devices
  n = config.mesh.num_devices or available
  _check(0 < n <= available, f"mesh.num_devices={n}, but {available} devices are available.")
  try:
    data, fsdp = sharding.mesh_shape(config, n)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  per_step = data * fsdp * opt.grad_accum_steps
  _check(train.batch_size % per_step == 0,
         f"train.batch_size={train.batch_size} must be divisible by devices × grad_accum_steps "
         f"= {data * fsdp} × {opt.grad_accum_steps}.")


def check_lengths(config, max_seq_lens: dict) -> None:
  """Prompt + response (training) and prompt + generated tokens (eval) must fit every model's
  max_seq_len (given as {"student": n, "teacher": m} once the models are built)."""
  data = config.data
  new_tokens = config.eval.max_new_tokens or data.max_response_len
  for role, limit in max_seq_lens.items():
    for what, n in (("data.max_response_len", data.max_response_len),
                    ("eval.max_new_tokens", new_tokens)):
      _check(data.max_prompt_len + n <= limit,
             f"data.max_prompt_len + {what} = {data.max_prompt_len} + {n} exceeds the {role}'s "
             f"max_seq_len={limit}.")
