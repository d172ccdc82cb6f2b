"""Model layer: the NNX Llama, checkpoint loaders (GGUF, HF safetensors) and the tokenizer."""

from gkd.models.gguf import load_gguf, save_gguf, smollm2_gguf_path  # noqa: F401
from gkd.models.llama import Llama, LlamaConfig, derive_student, init_model  # noqa: F401
from gkd.models.safetensors import load_pretrained, save_pretrained  # noqa: F401
from gkd.models.tokenizer import Tokenizer  # noqa: F401
