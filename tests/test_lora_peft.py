"""PEFT round trips against `peft` itself on a tiny random Llama built in code (no downloads):
an msm-jax adapter exported as a PEFT directory and loaded by `peft` onto the HF base gives
msm-jax's logits, and a PEFT adapter imported into msm-jax gives `peft`'s (float32, 1e-4)."""

import copy
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from msm_jax.config import model_config  # noqa: E402
from msm_jax.interop.peft import PeftError, load_adapter, read_config, save_adapter  # noqa: E402
from msm_jax.lora import LoraConfig, LoraModel  # noqa: E402
from msm_jax.model import ModelDef  # noqa: E402

torch.set_num_threads(1)
L, D, N, K, H, F, V = 2, 32, 4, 2, 8, 48, 96
HF_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def hf_base():
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
      vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
      num_attention_heads=N, num_key_value_heads=K, rms_norm_eps=1e-5, initializer_range=0.2,
      tie_word_embeddings=False, max_position_embeddings=64,
      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
  model = transformers.LlamaForCausalLM(cfg).eval()
  with torch.no_grad():  # non-trivial norms; logits of order 1 so 1e-4 tests layout, not rounding
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5) if name != "model.norm.weight" else p.uniform_(0.2, 0.4)
  return model


def msm_model_def():
  m = model_config()
  m.update(vocab_size=V, d_model=D, n_layers=L, n_heads=N, n_kv_heads=K, mlp_dim=F,
           tie_embeddings=False, rope_theta=10000.0, norm_eps=1e-5)
  return ModelDef(m)


def msm_base(hf, md):
  """The HF Llama's weights in msm-jax layout (a test-local converter: [out, in] -> [in, out],
  head axes split, layers stacked)."""
  sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  stack = lambda s: np.stack([sd[f"model.layers.{i}.{s}"] for i in range(L)])
  t = lambda s: stack(s).transpose(0, 2, 1)
  params = {
      "embed": sd["model.embed_tokens.weight"], "lm_head": sd["lm_head.weight"].T,
      "final_norm": {"scale": sd["model.norm.weight"]},
      "layers": {
          "attn_norm": {"scale": stack("input_layernorm.weight")},
          "mlp_norm": {"scale": stack("post_attention_layernorm.weight")},
          "attn": {"wq": t("self_attn.q_proj.weight").reshape(L, D, N, H),
                   "wk": t("self_attn.k_proj.weight").reshape(L, D, K, H),
                   "wv": t("self_attn.v_proj.weight").reshape(L, D, K, H),
                   "wo": t("self_attn.o_proj.weight").reshape(L, N, H, D)},
          "mlp": {"w_gate": t("mlp.gate_proj.weight"), "w_up": t("mlp.up_proj.weight"),
                  "w_down": t("mlp.down_proj.weight")}}}
  assert jax.tree.structure(params) == jax.tree.structure(md.pure_abstract())
  return params


TOKENS = np.random.default_rng(0).integers(0, V, (2, 24)).astype(np.int32)


def msm_logits(md, base, adapters=None, spec=None):
  pos = np.broadcast_to(np.arange(TOKENS.shape[1], dtype=np.int32), TOKENS.shape)
  seg = np.ones_like(TOKENS)
  if adapters is None:
    return np.asarray(md.apply(base, TOKENS, pos, seg)[0])
  return np.asarray(LoraModel(md, spec).apply(adapters, TOKENS, pos, seg, base=base)[0])


def hf_logits(model):
  with torch.no_grad():
    return model(input_ids=torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()


def test_the_converted_base_matches_transformers(hf_base):
  md = msm_model_def()
  np.testing.assert_allclose(msm_logits(md, msm_base(hf_base, md)), hf_logits(hf_base), atol=1e-4)


@pytest.mark.parametrize("targets", [tuple(HF_NAMES), ("q_proj", "v_proj", "down_proj")])
def test_peft_adapter_imported_gives_peft_logits(hf_base, tmp_path, targets):
  torch.manual_seed(1)
  pcfg = peft.LoraConfig(r=4, lora_alpha=12, target_modules=list(targets), lora_dropout=0.0,
                         init_lora_weights=False)  # random, non-zero B
  pm = peft.get_peft_model(copy.deepcopy(hf_base), pcfg).eval()
  pm.save_pretrained(tmp_path)
  want = hf_logits(pm)
  assert np.abs(want - hf_logits(hf_base)).max() > 1e-2  # the adapter matters
  md = msm_model_def()
  adapters, spec = load_adapter(tmp_path, md)
  assert spec.rank == 4 and spec.alpha == 12.0 and len(spec.targets) == len(targets)
  got = msm_logits(md, msm_base(hf_base, md), adapters, spec)
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_msm_adapter_exported_loads_in_peft(hf_base, tmp_path):
  md = msm_model_def()
  spec = LoraConfig(rank=4, alpha=8.0, dropout=0.0,
                    targets=("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"))
  lm = LoraModel(md, spec)
  adapters = lm.init(jax.random.PRNGKey(0))
  for i, name in enumerate(sorted(adapters)):  # non-zero B, as after training
    b = adapters[name]["b"]
    adapters[name]["b"] = 0.5 * jax.random.normal(jax.random.PRNGKey(10 + i), b.shape)
  save_adapter(tmp_path, jax.device_get(adapters), spec, base_model="tiny-llama")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json",
                                                        "adapter_model.safetensors"]
  pm = peft.PeftModel.from_pretrained(copy.deepcopy(hf_base), tmp_path).eval()
  want = msm_logits(md, msm_base(hf_base, md), adapters, spec)
  np.testing.assert_allclose(hf_logits(pm), want, atol=1e-4)
  # and back: the same adapters, exactly
  again, spec2 = load_adapter(tmp_path, md)
  assert spec2 == spec
  jax.tree.map(np.testing.assert_array_equal, again, jax.device_get(adapters))


@pytest.mark.parametrize("field,value", [("use_rslora", True), ("use_dora", True),
                                         ("rank_pattern", {"q_proj": 8}),
                                         ("target_modules", ["q_proj", "lm_head"])])
def test_adapters_we_cannot_compute_exactly_are_refused(tmp_path, field, value):
  c = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], field: value}
  (tmp_path / "adapter_config.json").write_text(json.dumps(c))
  with pytest.raises(PeftError, match=field):
    read_config(tmp_path)
