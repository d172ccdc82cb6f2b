"""Named model shapes: a test size, and the shapes of released checkpoints (for `source="init"`
models and memory checks without the weights; the weights come from `load_pretrained`)."""

from gkd.models.config import LlamaConfig

_LLAMA32 = dict(vocab_size=128256, n_kv_heads=8, ffn_dim=8192, max_seq_len=131072, rope_theta=5e5,
                rope_scaling="llama3", rope_factor=32.0, rope_low_freq_factor=1.0,
                rope_high_freq_factor=4.0, rope_original_max_len=8192, norm_eps=1e-5)
_QWEN3 = dict(family="qwen3", vocab_size=151936, n_heads=16, n_kv_heads=8, head_dim=128,
              max_seq_len=40960, rope_theta=1e6, norm_eps=1e-6, n_layers=28)

PRESETS: dict[str, LlamaConfig] = {
  # Test size: compiles in a second or two on CPU.
  "tiny": LlamaConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                      max_seq_len=256),
  "smollm2-135m": LlamaConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
                              ffn_dim=1536, max_seq_len=8192, rope_theta=100000.0),
  "smollm2-360m": LlamaConfig(vocab_size=49152, dim=960, n_layers=32, n_heads=15, n_kv_heads=5,
                              ffn_dim=2560, max_seq_len=8192, rope_theta=100000.0),
  "smollm2-1.7b": LlamaConfig(vocab_size=49152, dim=2048, n_layers=24, n_heads=32, n_kv_heads=32,
                              ffn_dim=8192, max_seq_len=8192, rope_theta=130000.0),
  "qwen3-0.6b": LlamaConfig(dim=1024, ffn_dim=3072, **_QWEN3),
  "qwen3-1.7b": LlamaConfig(dim=2048, ffn_dim=6144, **_QWEN3),
  "llama3.2-1b": LlamaConfig(dim=2048, n_layers=16, n_heads=32, head_dim=64, **_LLAMA32),
  "llama3.2-3b": LlamaConfig(dim=3072, n_layers=28, n_heads=24, head_dim=128, **_LLAMA32),
}
