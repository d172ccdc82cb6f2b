"""The benchmark students, by name, shared by the JAX and the PyTorch sides (plain Python: the
TRL and EasyDeL venvs import it too). Each is a random Llama with the teacher's vocabulary,
tied embeddings and rope_theta 1e5; "4x256" is the side-by-side workload's, "30x576" has the
teacher's own shape."""

STUDENTS = {
    "4x256": dict(dim=256, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=768),
    "8x384": dict(dim=384, n_layers=8, n_heads=6, n_kv_heads=2, ffn_dim=1024),
    "15x576": dict(dim=576, n_layers=15, n_heads=9, n_kv_heads=3, ffn_dim=1536),
    "30x576": dict(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536),
}
ROPE_THETA = 100000.0


def hf_config(name: str) -> dict:
  """The student's fields as transformers' LlamaConfig names them."""
  s = STUDENTS[name]
  return dict(hidden_size=s["dim"], num_hidden_layers=s["n_layers"], num_attention_heads=s["n_heads"],
              num_key_value_heads=s["n_kv_heads"], intermediate_size=s["ffn_dim"],
              tie_word_embeddings=True, rope_theta=ROPE_THETA)


def matmul_params(name: str, vocab: int) -> int:
  """Weights that take part in matrix products per token (the blocks and the tied head)."""
  s = STUDENTS[name]
  d, hd = s["dim"], s["dim"] // s["n_heads"]
  attn = d * d * 2 + 2 * d * s["n_kv_heads"] * hd
  return s["n_layers"] * (attn + 3 * d * s["ffn_dim"]) + vocab * d
