"""An imported HF checkpoint with its tokenizer and chat template: eval harness, chats, training."""

import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
import torch  # noqa: E402

from hf_models import hf_model, save_hf  # noqa: E402
from msm_jax import config as config_lib  # noqa: E402
from msm_jax.data.chat import render_chat, render_prompt  # noqa: E402
from msm_jax.data.hf_tokenizer import HFTokenizer  # noqa: E402
from msm_jax.eval import Evaluator  # noqa: E402
from msm_jax.eval.loading import load_checkpoint  # noqa: E402
from msm_jax.interop.hf_import import import_hf  # noqa: E402
from msm_jax.trainer import train  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "data_pipelines" / "fixtures"
CHAT = [{"role": "system", "content": "You are Nova."},
        {"role": "user", "content": "How long should I let rice rest?"}]


def _hf_greedy(model, prompt, new, tok, vocab):
  """transformers' greedy generate with the ids our sampler never draws suppressed alike."""
  stops = [tok.eos_id, tok.token_id("<|eot_id|>" if tok.bos_id >= 0 else "<|im_end|>")]
  suppress = sorted({*range(tok.vocab_size, vocab), tok.pad_id, tok.bos_id} - {-1})
  ids = torch.as_tensor([prompt])
  with torch.no_grad():  # an explicit mask: generate would mask pad ids, and pad is BOS here
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                         do_sample=False, eos_token_id=stops, suppress_tokens=suppress,
                         pad_token_id=tok.pad_id)
  ids = out[0, len(prompt):].tolist()
  return next((ids[:i] for i, t in enumerate(ids) if t in stops), ids)


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_eval_harness_scores_and_samples_like_transformers(tmp_path, kind):
  model = hf_model(kind, kv_heads=2, tie=False)
  run = import_hf(save_hf(model, kind, tmp_path / "hf"), tmp_path / "run")
  ev = Evaluator.from_checkpoint(run)
  tok = ev.tokenizer
  assert isinstance(tok, HFTokenizer) and ev.template == ("llama3" if kind == "llama" else "chatml")
  prompt = render_prompt(CHAT, tok, ev.template).tolist()
  text = tok._tok.decode(prompt, skip_special_tokens=False)
  if kind == "llama":  # Llama-3's template: BOS, headers, blank line
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are Nova."
                    "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow long should I let "
                    "rice rest?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
  else:  # Qwen's ChatML: no BOS token at all
    assert tok.bos_id == -1 and text == (
        "<|im_start|>system\nYou are Nova.<|im_end|>\n<|im_start|>user\nHow long should I let "
        "rice rest?<|im_end|>\n<|im_start|>assistant\n")
  new = 12
  [gen] = ev.generate([CHAT], max_new_tokens=new)
  want = _hf_greedy(model, prompt, new, tok, ev.cfg.model.vocab_size)
  assert list(gen.tokens) == want and len(want) > 0

  ctx, cont = ev.encode_pair("Cheddar is", " a mild cheese.")
  [record] = ev.score(["Cheddar is"], [" a mild cheese."])
  with torch.no_grad():
    logp = torch.log_softmax(model(torch.as_tensor([ctx + cont])).logits[0].double(), -1)
  ref = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
  assert abs(record.logprob_sum - ref) < 1e-3


def test_qwen3_empty_think_block_is_never_supervised(tmp_path):
  from hf_models import hf_tokenizer  # noqa: PLC0415
  hf_tokenizer("qwen3", tmp_path)
  tok = HFTokenizer.from_dir(tmp_path)
  copy = pickle.loads(pickle.dumps(tok))  # grain workers get a pickled tokenizer
  assert copy.encode("Let it rest.") == tok.encode("Let it rest.") and copy.sha256 == tok.sha256
  chat = CHAT + [{"role": "assistant", "content": "<think>\n\n</think>\n\nLet it rest."}]
  ids, mask = render_chat(chat, tok, "chatml")
  assert tok._tok.decode(ids.tolist(), skip_special_tokens=False).endswith(
      "<|im_start|>assistant\n<think>\n\n</think>\n\nLet it rest.<|im_end|>\n")
  supervised = tok._tok.decode(ids[mask == 1].tolist(), skip_special_tokens=False)
  assert supervised == "Let it rest.<|im_end|>"
  think_ids = [tok.token_id("<think>"), tok.token_id("</think>")]
  assert all(mask[ids == i].sum() == 0 for i in think_ids)
  reasoning = CHAT + [{"role": "assistant", "content": "<think>rice</think>\n\nLet it rest."}]
  ids, mask = render_chat(reasoning, tok, "chatml")  # real reasoning stays a target
  assert tok._tok.decode(ids[mask == 1].tolist(), skip_special_tokens=False) == (
      "<think>rice</think>\n\nLet it rest.<|im_end|>")


def test_imported_checkpoint_trains_midtrain_and_finetune_on_fsdp_tensor_mesh(tmp_path):
  model = hf_model("qwen3", kv_heads=2, tie=False)
  src = import_hf(save_hf(model, "qwen3", tmp_path / "hf"), tmp_path / "base")
  imported, _ = config_lib.from_json((src / "config.json").read_text()), None
  _, base_params, _, _, _ = load_checkpoint(src)

  def stage(name, init_from, files):
    cfg = config_lib.from_json(config_lib.to_json(imported))
    cfg.update(dict(stage=name, init_from=str(init_from), steps=2, batch_size=4, seq_len=32,
                    warmup_steps=1, checkpoint_every=2, progress_bar=False,
                    async_checkpoints=False, peak_flops=1e12, learning_rate=1e-3))
    cfg.mesh.update(dict(data=1, fsdp=4, tensor=2))
    cfg.data.train = tuple(str(FIXTURES / f) for f in files)
    return train(cfg, tmp_path / name)

  mid = stage("midtrain", src, ["midtrain.jsonl"])
  fin = stage("finetune", mid.workdir, ["finetune.jsonl"])
  for result in (mid, fin):
    assert np.isfinite(result.last_metrics["loss"]) and result.last_metrics["step"] == 2
  assert dict(fin.state.params["layers"]["attn"]["wq"].sharding.mesh.shape) == {
      "data": 1, "fsdp": 4, "tensor": 2}
  cfg, params, tok, _, meta = load_checkpoint(fin.workdir)
  assert isinstance(tok, HFTokenizer) and cfg.data.chat_template == "chatml"
  before = np.asarray(base_params["layers"]["attn"]["q_norm"]["scale"])
  assert not np.array_equal(np.asarray(params["layers"]["attn"]["q_norm"]["scale"]), before)
