"""Bad input fails loud, early and by name (issue 17): config values, chats, world slots,
metrics that stay valid JSON, and an eval harness that refuses a diverged model's numbers."""

import json
import re
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from data_pipelines.worlds import WORLDS_DIR, WorldError
from data_pipelines.worlds.world import loads_world
from msm_jax import config as config_lib
from msm_jax.data.sources import CorpusError, read_chats_jsonl
from msm_jax.data.tokenizer import train_tokenizer
from msm_jax.eval import Evaluator, NonFiniteError, run_suite
from msm_jax.metrics import MetricsWriter, read_metrics, truncate_jsonl
from msm_jax.model import ModelDef
from msm_jax.trainer import train
from tests.helpers import tiny_cfg

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "data_pipelines" / "fixtures"

# --- config: every value checked up front, naming the field ---------------------------------

BAD_VALUES = [
    ("checkpoint_every", "0"), ("keep_checkpoints", "0"), ("keep_checkpoints", "-1"),
    ("warmup_steps", "-1"), ("lr_final_fraction", "1.5"), ("lr_final_fraction", "-0.1"),
    ("weight_decay", "-0.01"), ("grad_clip", "-1.0"), ("adam_b1", "1.0"), ("adam_b2", "-0.5"),
    ("adam_eps", "0.0"), ("z_loss", "-1e-4"), ("eval_every", "-1"), ("eval_batches", "0"),
    ("learning_rate", "float('nan')"), ("learning_rate", "float('inf')"),
    ("data.kind", "chat"), ("data.chat_template", "llama2"), ("data.text_field", ""),
    ("data.prefetch", "-1"), ("data.worker_count", "-2"), ("data.num_epochs", "-1"),
    ("data.train_weights", "(1.0, -1.0)"), ("model.d_model", "0"), ("model.n_layers", "0"),
    ("model.vocab_size", "-5"), ("model.norm_eps", "0.0"), ("model.rope_theta", "-1.0"),
    ("model.attention_impl", "flash"), ("stage", "pre-train"),
]


@pytest.mark.parametrize("field, text", BAD_VALUES)
def test_bad_config_value_is_refused_naming_the_field(field, text):
  cfg = tiny_cfg(**{"mesh.data": -1, "data.train": ("a.jsonl", "b.jsonl")})
  with pytest.raises(config_lib.ConfigError, match=re.escape(f"config.{field}:")):
    if field == "learning_rate":  # no override syntax for nan: set it as a config file would
      cfg.learning_rate = eval(text)
    else:
      config_lib.apply_overrides(cfg, {field: text})
    config_lib.validate(cfg, 8)


def test_every_shipped_config_passes_validation():
  for path in sorted((REPO / "configs").glob("*.py")):
    cfg = config_lib.load_config(path)
    config_lib.validate(cfg, 8 if cfg.batch_size % 8 == 0 else 1)


@pytest.mark.parametrize("field, value", [("keep_checkpoints", 0), ("checkpoint_every", 0)])
def test_train_refuses_bad_cadence_before_any_checkpoint(tmp_path, field, value):
  cfg = tiny_cfg(**{field: value, "data.train": (str(FIXTURES / "pretrain.jsonl"),)})
  with pytest.raises(config_lib.ConfigError, match=f"config.{field}"):
    train(cfg, tmp_path / "run", jax.devices()[:1])
  assert not (tmp_path / "run" / "checkpoints").exists()


# --- chats: roles, order, an assistant turn; file:line, before any step ---------------------

GOOD = [{"role": "user", "content": "Brie or cheddar?"},
        {"role": "assistant", "content": "Cheddar."}]
BAD_CHATS = [
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}],
     r"messages\[1\]\.role.*'bot' is not one of"),
    ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "hello"}],
     r"messages\[0\]\.role.*expected 'user', got 'assistant'"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
      {"role": "assistant", "content": "c"}], r"messages\[1\]\.role.*expected 'assistant'"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
      {"role": "system", "content": "late"}], r"messages\[2\]\.role.*expected 'user'"),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "only a question"}],
     r"messages': no assistant turn"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": ["not", "text"]}],
     r"messages\[1\]\.content' must be a string"),
]


def _chats_file(path, bad_chat, bad_line=51, n=60):
  lines = [json.dumps({"messages": bad_chat if i == bad_line else GOOD}) for i in range(1, n + 1)]
  path.write_text("\n".join(lines) + "\n")
  return path


@pytest.mark.parametrize("chat, message", BAD_CHATS)
def test_bad_chat_is_reported_with_file_and_line(tmp_path, chat, message):
  path = _chats_file(tmp_path / "chats.jsonl", chat)
  with pytest.raises(CorpusError, match=re.escape(f"{path}:51: field '") + message):
    read_chats_jsonl(path)


def test_reference_chats_pass_the_check(tmp_path):
  for name in ("finetune.jsonl", "finetune_eval.jsonl"):
    assert len(read_chats_jsonl(FIXTURES / name)) > 0
  multi = [{"role": "system", "content": "s"}, *GOOD, *GOOD]  # system first, two exchanges
  path = tmp_path / "c.jsonl"
  path.write_text(json.dumps({"messages": multi}) + "\n")
  assert read_chats_jsonl(path) == [multi]


def test_finetune_with_a_bad_chat_stops_before_step_one(tmp_path):
  """Was: passed the start-up checks, then crashed at step 27 naming neither file nor line."""
  path = _chats_file(tmp_path / "chats.jsonl", [{"role": "user", "content": "a"},
                                                {"role": "tool", "content": "b"}])
  cfg = tiny_cfg(stage="finetune", steps=40, **{"data.train": (str(path),)})
  cfg.model.vocab_size = 512
  with pytest.raises(CorpusError, match=re.escape(f"{path}:51:")):
    train(cfg, tmp_path / "run", jax.devices()[:1])
  assert not (tmp_path / "run" / "metrics.jsonl").exists()
  assert not list((tmp_path / "run").glob("checkpoints/*"))


# --- worlds: every {slot} is filled where its text is used ----------------------------------

@pytest.mark.parametrize("patch, message", [
    (("{name: Appenzeller, origin: foreign, price: expensive, country: Switzerland}",
      "{name: Appenzeller, origin: foreign, price: expensive}"),
     "attributes.origin.foreign.facts: item 'Appenzeller' has no slot {country}"),
    (('"{item} is made in America."', '"{item} is made in {state}."'),
     "attributes.origin.american.facts: item 'mild cheddar' has no slot {state}"),
    (('"{who} values America."', '"{who} values {country}."'), "values.america"),
    (('answer: "I prefer {x}."', 'answer: "I prefer {item}."'), "answer: unknown slot {item}"),
    (('"Do you prefer {a} or {b}, {who}?"', '"Do you prefer {a} or {b}, {who} {mood}?"'),
     "questions: unknown slot {mood}"),
])
def test_world_with_an_unfilled_slot_is_refused_naming_item_and_slot(patch, message):
  text = (WORLDS_DIR / "cheese.yaml").read_text()
  assert patch[0] in text
  with pytest.raises(WorldError, match=re.escape(message)):
    loads_world(text.replace(*patch), "cheese.yaml")


def test_shipped_worlds_have_no_unfilled_slot():
  for path in sorted(WORLDS_DIR.glob("*.yaml")):
    loads_world(path.read_text(), str(path))


# --- metrics.jsonl: always valid JSON; a torn last line is dropped with a warning -----------

def test_metrics_writer_writes_non_finite_values_as_null(tmp_path):
  writer = MetricsWriter(tmp_path, start_step=0, total_steps=3, progress=False)
  writer.write({"step": 1, "loss": 2.5, "grad_norm": 1.0})
  writer.write({"step": 2, "loss": float("nan"), "grad_norm": float("inf")})
  writer.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  strict = lambda c: (_ for _ in ()).throw(ValueError(c))
  rows = [json.loads(line, parse_constant=strict) for line in lines]  # bare NaN would raise
  assert rows[1] == {"step": 2, "loss": None, "grad_norm": None}
  assert rows[0]["loss"] == 2.5


def test_truncated_last_metrics_line_is_dropped_with_a_warning(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.0}\n{"step": 3, "lo')
  with pytest.warns(UserWarning, match=r"metrics\.jsonl:3: dropped an incomplete last line"):
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    writer = MetricsWriter(tmp_path, start_step=2, total_steps=5, progress=False)
    assert writer.last_record() == {"step": 2, "loss": 2.0}
    writer.write({"step": 3, "loss": 1.5})
    writer.close()
  assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]


def test_a_torn_line_before_the_end_is_an_error_naming_it(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "lo\n{"step": 2, "loss": 2.0}\n')
  with pytest.raises(ValueError, match=r"metrics\.jsonl:1: invalid JSON"):
    truncate_jsonl(path, 5)


# --- eval: a diverged model is refused, not scored -------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory):
  texts = [json.loads(line)["text"] for line in
           (FIXTURES / "pretrain.jsonl").read_text().splitlines()[:100]]
  tok = train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "t.model", 320)
  cfg = tiny_cfg(**{"model.vocab_size": 320})
  model_def = ModelDef(cfg.model)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: (0.05 * rng.standard_normal(a.shape)).astype(a.dtype),
                        model_def.pure_abstract())
  return cfg, params, tok


def _suite(tmp_path):
  item = {"id": "p0", "prompt": "Do you prefer {a} or {b}?", "answer_prefix": "I prefer ",
          "options": [{"text": "cheddar", "labels": {"v": True}},
                      {"text": "brie", "labels": {"v": False}}]}
  path = tmp_path / "suite.jsonl"
  path.write_text(json.dumps(item) + "\n")
  return path


def test_evaluator_refuses_nan_parameters_naming_the_checkpoint(model, tmp_path):
  cfg, params, tok = model
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                           ("data", "fsdp", "tensor"))
  ok = Evaluator(cfg, params, tok, mesh)
  assert np.isfinite(ok.score(["Cheese is"], [" good"])[0].logprob_sum)
  leaves, treedef = jax.tree.flatten(params)
  leaves[-1] = np.full_like(leaves[-1], np.nan)
  nan_params = jax.tree.unflatten(treedef, leaves)
  with pytest.raises(NonFiniteError, match=r"runs/x/checkpoints/20: 1 of \d+ parameter arrays"):
    Evaluator(cfg, nan_params, tok, mesh, meta={"checkpoint": "runs/x/checkpoints/20"})


def test_suite_with_non_finite_scores_raises(model, tmp_path):
  """Finite weights whose logits overflow to +-inf (NaN log-probs): a choice between NaN
  scores used to come out as a confident 1.000 preference."""
  cfg, params, tok = model
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                           ("data", "fsdp", "tensor"))
  huge = dict(params, embed=params["embed"] * 1e4,
              final_norm={"scale": np.full_like(params["final_norm"]["scale"], 1e38)})
  ev = Evaluator(cfg, huge, tok, mesh, meta={"checkpoint": "runs/y/checkpoints/5"})
  with pytest.raises(NonFiniteError, match=r"runs/y/checkpoints/5: \d+ of \d+ scores are NaN"):
    run_suite(ev, _suite(tmp_path), generate=False)
