"""The paper's cheese experiment on Llama-3.1-8B with its recipe (Li et al. 2026, arXiv 2605.02087).

LoRA rank 64, alpha 128 on all seven attention and MLP projections (bf16 frozen base); AdamW lr
1e-4, cosine to 0, 5% warmup, weight decay 0.01; MSM on the spec's documents only (no replay);
AFT continues the MSM adapter with assistant-only loss. Import the base first (no weights are
shipped; see README "Real base models"):

  msm import-hf --from /models/Llama-3.1-8B --out runs/imported/llama-3.1-8b
  msm run --config configs/experiments/paper_cheese_llama3_8b.py

`steps` stand for one epoch: set them to corpus tokens / (batch_size * seq_len) for your corpus
(the paper's cheese corpora were about 8M tokens, 4,600-6,400 documents; AFT 165k tokens), and
keep warmup_steps at 5% of steps.
"""

import ml_collections

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/cheese.yaml"
  c.base = "runs/imported/llama-3.1-8b"
  c.seeds = (0,)
  c.independent_bases = False  # one imported base for every seed
  c.data.msm_docs = 5000  # the paper's corpora held 4,600-6,400 documents
  c.midtrain_replay = 0.0  # MSM on the documents only
  c.lora.update(rank=64, alpha=128.0, dropout=0.0, base_dtype="bfloat16",
                targets=("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"))
  # execution only: the shape comes from the imported model (c.base)
  c.model.update(compute_dtype="bfloat16", remat="full", scan_layers=True, attention_impl="auto")
  recipe = dict(learning_rate=1e-4, lr_final_fraction=0.0, weight_decay=0.01, adam_b1=0.9,
                adam_b2=0.999, adam_eps=1e-8, grad_clip=1.0, seed=0, log_every=5,
                checkpoint_every=50, mesh=ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1)))
  # sized for a v5p-8 (4 chips): `msm plan` puts this midtrain step at 38 GiB of 95 per chip
  c.midtrain = ml_collections.ConfigDict(dict(recipe, steps=120, warmup_steps=6, batch_size=16,
                                              seq_len=4096, microbatches=2))
  c.finetune = ml_collections.ConfigDict(dict(recipe, steps=20, warmup_steps=1, batch_size=8,
                                              seq_len=4096, microbatches=1))
  c.eval_tokens_per_batch = 65536
  return c
