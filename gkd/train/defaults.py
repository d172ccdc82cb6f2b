"""The default experiment config: every knob of a gkd run, with its meaning.

Config files in configs/ start from `default_config()` and override what they change.
Fields are grouped as in a big_vision config: models, data, mix, sampling, objective,
optim, train, mesh, eval.
"""

import ml_collections

from gkd import sources
from gkd.errors import ConfigError


def model_config(**overrides) -> ml_collections.ConfigDict:
  """How to build one model (teacher or student).

  source:
    "init"    random init from `llama` (a dict of LlamaConfig fields) or `preset`;
    "gguf"    a GGUF file (`path`; empty = the bundled SmolLM2-135M-Instruct);
    "pretrained" a Hugging Face directory (`path`); a finished gkd run exports its student
              to WORKDIR/export in this format, so earlier runs load the same way;
    "derive"  (student only) a copy of a subset of the teacher's layers: `derive_every_k`
              or `derive_layers`, as in DistilBERT.

  dtype: the compute dtype ("float32" or "bfloat16"). param_dtype: how the weights are
  stored; "" means float32 for the student (master weights: the optimizer state follows
  them) and `dtype` for the teacher (read only, so bf16 storage halves its memory).
  Logits, the loss and the divergences are float32 whatever these say.
  """
  cfg = ml_collections.ConfigDict({
      "source": "init",
      "path": "",
      "preset": "",
      "llama": ml_collections.ConfigDict(),  # LlamaConfig fields (vocab_size is taken from the tokenizer)
      "derive_every_k": 0,
      "derive_layers": ml_collections.FieldReference([], field_type=list),
      "dtype": "float32",
      "param_dtype": "",
  })
  cfg.update(overrides)
  return cfg


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.mode = "gkd"  # "gkd": distil the teacher into the student; "sft": fine-tune `student` on the data

  c.teacher = model_config()
  # teacher.source="self": on-policy self-distillation (gkd.teachers.self_distill). The teacher is
  # the student reading self_template, rendered with {prompt}, {reference} (the example's
  # reference response) and {answer}; the student reads only its prompt. self_weights: "current"
  # (stop-gradient, no copy), "initial" (frozen copy) or "ema" (decay self_ema_decay per step).
  # self_prompt_len: the teacher prompt's length in tokens (0: max_prompt_len + max_response_len).
  c.teacher.update(self_template="Reference solution: {reference}\n{prompt}",
                   self_weights="current", self_ema_decay=0.99, self_prompt_len=0)
  # teacher.source="scorer": a server that returns per-token log-probs (gkd.teachers.scorer; with
  # objective.estimator="sampled_token"): an OpenAI-compatible completions endpoint at `url`
  # serving `served_model`; each request waits timeout_s, failed ones are retried `retries`
  # times (back-off from backoff_s, doubling); at most max_prompts sequences per request.
  c.teacher.update(url="", served_model="", timeout_s=60.0, retries=3, backoff_s=1.0,
                   max_prompts=64)
  # Several teachers (gkd.teachers.ensemble): a list of model_config(weight=w, ...) entries; weights
  # are relative (normalized to sum 1). Empty: the single `teacher` above, a list of one.
  # Sequence-level KD (mix.teacher) samples from the first. See objective.multi_teacher.
  c.teachers = []
  # An offline teacher store (gkd.teachers.store_writer: `python -m gkd.teachers.store_writer --out=DIR`, or a
  # black-box import, gkd.teachers.blackbox): the run reads the teacher's responses and top-k log-probs
  # from DIR and builds no teacher model. "" = run the teacher.
  c.teacher_store = ""
  c.student = model_config()
  # Where the tokenizer comes from: "teacher" (the teacher's own), or "testbed" (char-level).
  c.tokenizer = "teacher"

  c.data = ml_collections.ConfigDict({
      "task": "arithmetic",  # a name in gkd.data.tasks.TASK_NAMES; "files" reads your own files
      # The task's parameters (paths, field names, split sizes, grader, few-shot, ...); empty means
      # the task's defaults. To set them from the command line, a config first fills this with
      # gkd.data.tasks.default_kwargs(task) (the command line can only override existing keys).
      "task_kwargs": ml_collections.ConfigDict(),
      "truncation": "truncate",  # or "error": a too-long prompt/response fails before training
      "max_prompt_len": 32,
      "max_response_len": 64,
      "chat_template": False,
      "data_dir": "",  # empty: gkd.data.builders.DEFAULT_DATA_DIR
      "num_train_examples": 0,  # 0: the whole split
  })

  # Where each step's training sequences come from (gkd.sources): each per-row source's fraction
  # (dataset, teacher, student; they sum to 1; drawn per step as in the GKD paper). `student` is
  # the on-policy fraction λ. per_example=True draws the source per row instead (the batch mixes
  # sources; a step may then sample with both models).
  c.mix = sources.default_mix()
  # Adaptive off-policy with a replay buffer (DistiLLM; gkd.sources.replay): capacity > 0 (rows) keeps the
  # student's samples and reuses them. Each step trains on student data (fresh or replayed) with
  # probability p, starting at mix.student (dataset otherwise); every `every` steps the student's
  # NLL on the validation split's first `val_examples` references is measured, and when it is
  # `eps` or more above the last recorded one, p rises by `increment`.
  c.mix.replay = ml_collections.ConfigDict({"capacity": 0, "every": 50, "eps": 0.1,
                                            "increment": 0.1, "val_examples": 256})

  # On-policy samples must follow the student's true distribution: keep these at
  # T=1, top_k=0, top_p=1 unless you mean to study something else. The *loss* temperature is
  # objective.temperature, a separate knob.
  c.sampling = ml_collections.ConfigDict({
      "temperature": 1.0, "top_k": 0, "top_p": 1.0,
      "teacher_temperature": 1.0,  # for sequence-level KD (teacher-generated responses)
      # Samples per prompt (TRL's num_generations): a step's train.batch_size rows are
      # batch_size / num_samples prompts, each repeated num_samples times.
      "num_samples": 1,
      # Sequence-level KD (mix.teacher): True keeps one teacher generation per sample key, made
      # when first needed (fixed targets); False draws fresh teacher samples every step, as the
      # student is sampled on-policy (the same number of samples for both).
      "cache_teacher_samples": True,
      # Speculative KD (Xu et al., 2025): K > 0 lets the teacher vet every on-policy token,
      # keeping the student's proposal when it is in the teacher's top-K and otherwise drawing
      # the teacher's own (at teacher_temperature). 0: plain on-policy sampling. Logged as
      # skd_replacement_rate, the fraction of response tokens the teacher replaced.
      "speculative_topk": 0,
  })

  c.objective = ml_collections.ConfigDict({
      # A name in gkd.divergences.NAMES and its parameters, bound by divergences.get(name, **kw)
      # (defaults there). generalized_jsd: beta (0.5), normalized (False: JSD(β)/(β(1−β)) is
      # continuous in β at the ends); skew_kl / skew_reverse_kl: alpha (0.1).
      # From the command line: --config.objective.divergence_kw="{'beta': 0.9}".
      "divergence": "generalized_jsd",
      "divergence_kw": ml_collections.ConfigDict(),
      "temperature": 1.0,  # loss temperature T (brings the T² factor)
      "alpha": 1.0,  # weight of the soft (divergence) term; 1−α goes to hard-label CE
      "reduction": "sequence",  # "sequence": mean per sequence then over the batch; "token": flat
      "teacher_topk": 0,  # >0: divergence from the teacher's top-k log-probs only
      "chunk_size": 0,  # >0: compute head + loss in sequence chunks (memory), 0: plain
      "hidden_loss": "",  # "", "cosine" or "mse" (DistilBERT-style, last hidden state)
      "hidden_weight": 0.0,  # weight of the hidden-state term
      # Intermediate layers (gkd.objectives.layer_distill): "0:1,1:3" matches student block 0 to teacher
      # block 1 and 1 to 3 with hidden_loss (required), replacing the last-hidden-state term;
      # learned projections where the widths differ. "" = off.
      "layer_map": "",
      # With several `teachers`: "mixture" (default) = the divergence to the weighted average of
      # the teachers' distributions (one well-defined target: each divergence keeps its meaning
      # and runs once); "sum" = the weighted sum of per-teacher divergences.
      "multi_teacher": "mixture",
      # A teacher with another tokenizer: "" refuses a vocabulary mismatch; "uld" = Universal Logit
      # Distillation (gkd.teachers.uld): loss = α·(sorted-probability Wasserstein-1 at aligned positions)
      # + (1−α)·the student's CE on its own tokens (needs α < 1). The teacher (gguf/pretrained)
      # keeps its tokenizer and scores its own tokenization of the same text; the data and the
      # student use tokenizer='testbed' or the student's own. Not with mix.teacher, several
      # teachers, teacher_topk, chunk_size or hidden_loss; eval then has no teacher KLs.
      "cross_tokenizer": "",
      # > 0: add rl_weight × a REINFORCE term on the student's own (on-policy) samples, graded by
      # the task's grader, with a leave-one-out baseline (gkd.objectives.policy_gradient). Needs
      # mix.student > 0 and a graded task; not with chunk_size.
      "rl_weight": 0.0,
      # "full": the divergence over the whole vocabulary at every response position. "sampled_token":
      # the reverse KL estimated from the teacher's log-prob of each token the student sampled, as a
      # policy gradient (gkd.objectives.sampled_token): needs divergence='reverse_kl', mix.student=1
      # and a teacher that scores tokens (a model, teacher.source='scorer' or 'self').
      "estimator": "full",
      # > 0: cap the sampled-token estimator's importance weights (current student / sampler) here.
      "sampled_token_clip": 0.0,
  })

  # A LoRA student (gkd.models.lora): rank > 0 trains only low-rank adapters (nnx.LoRA) on the student
  # kernels named in `targets`, scaled by alpha / rank; the base is frozen, the optimizer state
  # and checkpoints hold the adapters only, and export merges them into the weights.
  c.lora = ml_collections.ConfigDict({"rank": 0, "alpha": 16.0, "targets": "q,k,v,o,gate,up,down"})

  c.optim = ml_collections.ConfigDict({
      "learning_rate": 3e-4,
      "schedule": "cosine",  # "cosine" or "constant" (both after linear warm-up)
      "warmup_steps": 10,
      "weight_decay": 0.0,
      "b1": 0.9, "b2": 0.95,
      "grad_clip": 1.0,
      "grad_accum_steps": 1,
  })

  c.train = ml_collections.ConfigDict({
      "batch_size": 8,  # global, over all devices and hosts
      "num_steps": 100,
      "log_every": 10,
      "checkpoint_every": 50,
      "keep_checkpoints": 2,
      "progress_bar": True,
      # Cut each batch's responses to its longest real one, rounded up to 16/32/64/...
      # (sampling.trim_to_bucket): the loss is the same, and padding columns cost nothing.
      "trim_responses": True,
  })

  # Mesh: data parallel, optionally FSDP. data=-1 takes what fsdp leaves; num_devices=0 uses
  # every device (a smaller number takes the first ones: for comparisons and debugging).
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "num_devices": 0})

  c.eval = ml_collections.ConfigDict({
      "every": 50,  # steps; 0 disables periodic eval (the final eval still runs)
      "at_start": False,  # also evaluate at step 0: the "before" of learning curves and the report
      # With at_start: also evaluate the teacher once at step 0 on the same examples, so that the
      # report shows its score beside the student's (logged as eval/teacher/...).
      "score_teacher": False,
      "split": "validation",
      "num_examples": 64,
      "batch_size": 32,
      "max_new_tokens": 0,  # 0: data.max_response_len
  })
  return c


def parse_arg(arg: str, **defaults):
  """Parses a config file's `key=value,key2=value2` argument, typed by `defaults` (big_vision style)."""
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise ConfigError(f"Config argument {item!r}: expected key=value with key in "
                        f"{sorted(defaults)}")
    kind = type(defaults[key])
    try:
      out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    except ValueError:
      raise ConfigError(f"Config argument {item!r}: {key} takes {kind.__name__} values, "
                        f"not {value!r}.") from None
  return ml_collections.ConfigDict(out)
