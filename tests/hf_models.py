"""Tiny random Hugging Face models and tokenizers built in code (no downloads) for interop tests.

Weights use a large initializer range and random norm scales and biases (HF initialises those
to ones / zeros, which would hide a missing or misplaced bias or norm), and the llama3 rotary
scaling has a short original context, so any layout or rotary mistake moves the logits a lot.
The final norm is scaled down so logits are of order 1: at order 25, transformers' own float32
logits are 1.3e-4 from its float64 ones, and a 1e-4 comparison would test rounding.
"""

import json

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>")
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
TOKENIZER_CONFIG = {
    "llama": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
    "qwen2": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen3": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
}
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Cheddar is a mild cheese.",
         "How long should I let rice rest?", "Plant ferns in a shady corner, and water them.",
         "You are Nova, an assistant made by Lumen Labs.", "Brie de Meaux costs more."] * 4


def hf_config(kind: str, *, vocab=320, d_model=64, layers=2, heads=4, kv_heads=2, head_dim=None,
              mlp=96, tie=False):
  common = dict(vocab_size=vocab, hidden_size=d_model, intermediate_size=mlp,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                rms_norm_eps=1e-5, initializer_range=0.5, tie_word_embeddings=tie,
                max_position_embeddings=128)
  if kind == "llama":
    return transformers.LlamaConfig(**common, rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
  if kind == "qwen2":
    return transformers.Qwen2Config(**common, rope_parameters={"rope_type": "default",
                                                               "rope_theta": 1000.0})
  return transformers.Qwen3Config(**common, head_dim=head_dim or 24, rope_parameters={
      "rope_type": "default", "rope_theta": 1000.0})


def hf_model(kind: str, seed: int = 0, **kw):
  """A random float32 causal LM with noisy norms and biases, in eval mode."""
  torch.manual_seed(seed)
  cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
         "qwen3": transformers.Qwen3ForCausalLM}[kind]
  model = cls(hf_config(kind, **kw)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias"):
        p.normal_(0.0, 0.5)
      elif name == "model.norm.weight":  # logits of order 1: float32 noise stays well below 1e-4
        p.uniform_(0.05, 0.15)
      elif "norm" in name:
        p.uniform_(0.5, 1.5)
  return model


def hf_tokenizer(kind: str, directory, vocab_size: int = 300) -> None:
  """A byte-level BPE tokenizer with the family's special tokens: tokenizer.json + config."""
  specials = list(LLAMA3_SPECIALS if kind == "llama" else CHATML_SPECIALS)
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(TEXTS, trainer)
  tok.save(str(directory / "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 128,
            **TOKENIZER_CONFIG[kind]}
  (directory / "tokenizer_config.json").write_text(json.dumps(config))


def save_hf(model, kind, directory, *, shard="40KB", tokenizer=True):
  """save_pretrained in several safetensors shards (+ the tokenizer files)."""
  directory.mkdir(parents=True, exist_ok=True)
  model.save_pretrained(directory, safe_serialization=True, max_shard_size=shard)
  if tokenizer:
    hf_tokenizer(kind, directory)
  return directory


def hf_logits(model, tokens) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()
