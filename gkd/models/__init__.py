"""Model layer: the NNX Llama, checkpoint loaders (GGUF, HF safetensors) and the tokenizer."""

from gkd.models.llama import Llama, LlamaConfig  # noqa: F401
from gkd.models.tokenizer import Tokenizer  # noqa: F401
