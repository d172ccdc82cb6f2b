"""The optimizer: AdamW after a linear warm-up, then cosine decay or a constant rate."""

import optax


def make_optimizer(optim, num_steps: int) -> optax.GradientTransformation:
  """From a config's `optim` block (see gkd.train.defaults) and the run's length."""
  warmup = min(optim.warmup_steps, max(num_steps - 1, 0))
  if optim.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, optim.learning_rate, warmup, max(num_steps, warmup + 1))
  else:
    lr = optax.join_schedules([optax.linear_schedule(0.0, optim.learning_rate, max(warmup, 1)),
                               optax.constant_schedule(optim.learning_rate)], [max(warmup, 1)])
  return optax.chain(
      optax.clip_by_global_norm(optim.grad_clip) if optim.grad_clip > 0 else optax.identity(),
      optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay),
  )
