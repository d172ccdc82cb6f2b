"""gkd: generalized and on-policy knowledge distillation in JAX/Flax."""
