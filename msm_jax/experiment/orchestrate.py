"""The experiment's stages: one `msm train` run config per condition and seed, content-addressed
and cached, and the evaluations of each run.

Every training stage lives in `<workdir>/runs/<label>-<key>/`, where the key hashes the stage's
run config, the bytes of its data files and its parent's key: a rerun finds `done.json` and
skips the stage (evals are cached next to it, keyed by the suite file's hash), an interrupted
stage resumes from its checkpoint, and deleting one run directory reruns only that stage and
the evals that read it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from data_pipelines.worlds import Sizes, WorldData
from msm_jax import config as config_lib
from msm_jax.model_config import EXECUTION_KEYS, ModelConfig
from msm_jax.experiment.conditions import BASE, Condition, main_conditions, sweep_conditions
from msm_io.files import atomic_write_text, file_sha256, link_tree, read_jsonl

REPO = Path(__file__).resolve().parents[2]
STAGE_BLOCKS = {"pretrain": "pretrain", "midtrain": "midtrain", "finetune": "finetune"}
BASE_SUITES = ("heldout", "aft", "indomain", "probes", "characters")
RUN_SUITES = ("heldout", "aft", "indomain")
AFT_SUITES = ("heldout", "aft")
NOVEL = "heldout_novel"  # held-out pairs in held-back phrasings, where the world builds them


def stage_config(exp, stage: str, files, weights=(), init_from: str = "", seed: int | None = None):
  """A full `msm train` run config for one stage of the experiment."""
  cfg = config_lib.base_config()
  cfg.stage = stage
  for key, value in exp[STAGE_BLOCKS[stage]].items():
    cfg[key] = value
  cfg.model = ml_collections.ConfigDict(exp.model.to_dict())
  if exp.base:  # the imported model's shape, tokenizer and template; our execution choices
    base = config_lib.from_json((Path(exp.base) / "config.json").read_text())
    cfg.model = ml_collections.ConfigDict(base.model.to_dict())
    for key in EXECUTION_KEYS:
      cfg.model[key] = exp.model[key]
    cfg.data.chat_template, cfg.data.add_bos = base.data.chat_template, base.data.add_bos
  if stage != "pretrain":
    cfg.lora = ml_collections.ConfigDict(exp.lora.to_dict())
    if int(cfg.lora.rank) and float(cfg.body_lr_scale) != 1.0:
      block = STAGE_BLOCKS[stage]
      raise config_lib.ConfigError(
          f"config.{block}.body_lr_scale={cfg.body_lr_scale}: LoRA trains adapters only, not "
          "the token embeddings; with lora.rank > 0 add --config.midtrain.body_lr_scale=1.0 "
          "--config.finetune.body_lr_scale=1.0")
  cfg.data.train = tuple(str(f) for f in files)
  cfg.data.train_weights = tuple(float(w) for w in weights)
  cfg.init_from, cfg.init_optimizer = init_from, "fresh"
  cfg.progress_bar, cfg.keep_checkpoints = False, 1
  if seed is not None:
    cfg.seed = int(seed)
  return cfg


def stage_key(cfg, parent_key: str = "") -> str:
  """Content address of a stage: its config without paths or logging, its data, its parent."""
  d = config_lib.without_neutral(cfg.to_dict())
  for key in config_lib.EXECUTION_KEYS:
    d.pop(key, None)
  # "auto" execution choices hashed as what runs on this backend, which is what the keys hashed
  # before "auto" existed: CPU stages keep their keys (and their caches)
  d["model"]["materialize_grads"] = ModelConfig.of(cfg.model).materialize_grads
  if d["model"]["attention_impl"] == "auto" and jax.default_backend() == "cpu":
    d["model"]["attention_impl"] = "xla"  # auto is the XLA reference on CPU (msm_jax.attention)
  if not d.get("lora", {}).get("rank"):  # LoRA off hashes as before the lora block existed
    d.pop("lora", None)
  d["data"]["train"] = [file_sha256(f) for f in cfg.data.train]
  if d["data"].get("shards", 0) in (0, 1) and jax.process_count() == 1:
    d["data"].pop("shards", None)  # one data shard: the order keys hashed before shards existed
  d["init_from"] = parent_key
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def run_dirname(label: str) -> str:
  """A condition label as a directory name: checkpoint paths go through tensorstore, which
  fails to read back directories with brackets in their names (`MSM-x[bare_rules]`)."""
  return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)


def imported_base(exp) -> tuple[str, Path]:
  """(key, run dir) of `exp.base`, an imported model: keyed by its path (not trained here)."""
  path = Path(exp.base).absolute()
  return "import-" + hashlib.sha256(str(path).encode()).hexdigest()[:12], path


def base_run(exp, cond: Condition) -> Condition:
  """The base model a seed's conditions start from: the seed's own, or one shared by all."""
  return BASE.at(cond.seed if exp.independent_bases else None)


def last_stage(exp, paths: dict, cond: Condition):
  """(the run config of `cond`'s last stage, the run it continues or None); `cond` names a
  seed, except the shared base. The same config always gives the same stage key."""
  parent = cond.parent
  if parent is None:  # the base model: pretraining, seeded by the seed when bases are per seed
    return stage_config(exp, "pretrain", [paths["pretrain"]], seed=cond.seed), None
  if not parent.midtrained:
    parent = base_run(exp, cond)
  if cond.aft:
    steps = exp.finetune.steps if cond.aft_steps is None else cond.aft_steps
    cfg = stage_config(exp, "finetune", [paths["aft"]], seed=cond.seed)
    cfg.steps = int(steps)
    cfg.warmup_steps = min(cfg.warmup_steps, max(1, steps // 10))
    return cfg, parent
  msm = (paths["control"][cond.seed] if cond.control
         else paths["msm"][(cond.value, cond.variant, cond.seed)])
  files, weights = [msm], [1.0]
  for key, share in (("replay", exp.midtrain_replay), ("late", exp.midtrain_late)):
    if share:
      files.append(paths[key])
      weights.append(float(share))
      weights[0] -= share
  if len(files) == 1:  # the paper midtrains on the MSM documents only
    return stage_config(exp, "midtrain", files, seed=cond.seed), parent
  return stage_config(exp, "midtrain", files, weights, seed=cond.seed), parent


def run_key(exp, paths: dict, cond: Condition) -> str:
  """The stage key of one seed's run of `cond` (its parents' keys included), training nothing."""
  if cond.parent is None and exp.base:
    return imported_base(exp)[0]
  cfg, parent = last_stage(exp, paths, cond)
  return stage_key(cfg, run_key(exp, paths, parent) if parent else "")


def finished_run(runs: Path, key: str) -> Path | None:
  """A finished run of the stage `key` under `runs` (any label), or None."""
  return next((r for r in sorted(runs.glob(f"*-{key}")) if (r / "done.json").exists()), None)


def reuse_runs(exp) -> Path | None:
  """`<exp.reuse_from>/runs`, checked; only read from (its finished runs are linked into the
  workdir). Over worlds `reuse_from` is the other sweep's root and each world reads its own."""
  if not exp.get("reuse_from"):
    return None
  path = Path(exp.reuse_from)
  if not path.is_dir():
    raise config_lib.ConfigError(f"config.reuse_from={str(path)!r}: not a directory (the workdir "
                                 "of an earlier `msm run`; over worlds, its root holding "
                                 "world-<N>/)")
  if jax.process_count() > 1:
    raise config_lib.ConfigError("config.reuse_from: reusing runs is for one process; in a "
                                 "multi-host job copy the runs into the workdir instead")
  return path / "runs"


class Experiment:
  """One experiment directory: its data, its stage runs, their evals, and what this call did."""

  def __init__(self, exp, workdir):
    self.exp, self.root = exp, Path(workdir)
    self.timings: list[dict] = []
    self.reuse = reuse_runs(exp)  # checked before anything is written
    t = time.perf_counter()
    world = Path(exp.world)
    if not world.is_file() and (REPO / world).is_file():
      world = REPO / world  # configs name worlds relative to the repository
    self.data = WorldData(world, self.root / "data", Sizes(**exp.data.to_dict()))
    self.world = self.data.world
    self.values = tuple(exp.spec_values) or self.world.compare
    variants = tuple(dict.fromkeys(tuple(exp.variants) + ((exp.sweep.variant,)
                                                           if exp.sweep.aft_steps else ())))
    self.paths = self.data.build_all(self.values, variants, tuple(exp.seeds))
    self.late = bool(exp.data.late_chat_per_value or exp.data.late_declared_per_value)
    if self.late != bool(exp.midtrain_late) or not 0 <= exp.midtrain_replay + exp.midtrain_late < 1:
      raise config_lib.ConfigError(
          f"config.midtrain_late={exp.midtrain_late}: characters met only in midtraining "
          "(data.late_chat_per_value, data.late_declared_per_value) need a share of the "
          "midtraining batch, and a share needs them; with midtrain_replay "
          f"{exp.midtrain_replay} the MSM documents must keep a share")
    if self.late:
      self.paths["late"] = self.data.late
    if exp.control:
      self.paths["control"] = {s: self.data.msm_control(s) for s in exp.seeds}
    self._time("data", "build", t)
    self._runs: dict[Condition, tuple[str, Path]] = {}

  @property
  def conditions(self) -> list[Condition]:
    """Every condition, seedless, in the order they are run and reported."""
    exp = self.exp
    return (main_conditions(self.values, tuple(exp.variants), exp.control) +
            sweep_conditions(self.values, exp.sweep.variant, tuple(exp.sweep.aft_steps)))

  def suites(self, cond: Condition) -> tuple[str, ...]:
    """What each run is evaluated on (the held-back phrasings too, where the world has them)."""
    names = BASE_SUITES if cond.parent is None else AFT_SUITES if cond.aft else RUN_SUITES
    if self.late and cond.parent is not None and not cond.aft:
      names += ("characters",)  # did midtraining teach the late characters' values?
    return names + ((NOVEL,) if NOVEL in self.paths["suites"] else ())

  def _time(self, what: str, label: str, start: float, **extra) -> None:
    self.timings.append({"what": what, "label": label,
                         "seconds": round(time.perf_counter() - start, 2), **extra})

  def run_of(self, cond: Condition) -> tuple[str, Path]:
    """(key, run dir) of one seed's run of `cond`, training it and its parents unless done."""
    if cond.parent is None:
      cond = base_run(self.exp, cond)
      if self.exp.base:
        return imported_base(self.exp)
    if cond not in self._runs:
      cfg, parent = last_stage(self.exp, self.paths, cond)
      self._runs[cond] = self.train(cond.run_label, cfg, self.run_of(parent) if parent else None)
    return self._runs[cond]

  def train(self, label: str, cfg, parent: tuple[str, Path] | None = None) -> tuple[str, Path]:
    """Run one stage unless done; returns (key, run dir)."""
    from msm_jax.trainer import train
    if parent:
      cfg.init_from = str(parent[1])
    key = stage_key(cfg, parent[0] if parent else "")
    run = self.root / "runs" / f"{run_dirname(label)}-{key}"
    if not (run / "done.json").exists():  # the same stage under another label (a sweep point
      # equal to the default AFT budget): content-addressed, so reuse it
      run = finished_run(self.root / "runs", key) or run
    done = run / "done.json"
    src = finished_run(self.reuse, key) if self.reuse and not done.exists() else None
    if src:  # the same stage, finished in another experiment: content-addressed, so reuse it
      t = time.perf_counter()
      link_tree(src, run)
      print(f"[msm run] reuse {label}: {src} -> {run}", flush=True)
      self._time("train", label, t, cached=True, reused=str(src))
      return key, run
    if done.exists():
      self._time("train", label, time.perf_counter(), cached=True)
      return key, run
    print(f"[msm run] train {label}: {cfg.stage}, {cfg.steps} steps -> {run}", flush=True)
    t = time.perf_counter()
    result = train(cfg, run)
    if result.preempted:
      raise KeyboardInterrupt(f"{label} preempted; rerun to resume")
    secs = time.perf_counter() - t
    mfu = [r["mfu"] for r in read_jsonl(run / "metrics.jsonl") if r.get("mfu")]
    info = {"label": label, "key": key, "stage": cfg.stage, "steps": cfg.steps,
            "seconds": round(secs, 2), "loss": result.last_metrics.get("loss"),
            "mfu": float(np.median(mfu)) if mfu else None}
    if jax.process_index() == 0:  # written once in a multi-host job
      atomic_write_text(done, json.dumps(info, indent=1))
    self._time("train", label, t, cached=False, steps=cfg.steps, mfu=info["mfu"])
    return key, run

  def evaluate(self, label: str, run: Path, suites) -> dict:
    """{suite name: SuiteResult}, each cached in the run dir by the suite file's hash."""
    from msm_jax.eval import Evaluator, SuiteResult, run_suite
    out, ev, t = {}, None, time.perf_counter()
    for name in suites:
      path = self.paths["suites"][name]
      cache = run / "eval" / f"{name}-{file_sha256(path)[:12]}.json"
      if not cache.exists():
        if ev is None:
          ev = Evaluator.from_checkpoint(run, tokens_per_batch=self.exp.eval_tokens_per_batch)
        res = run_suite(ev, path, generate=False, name=name)
        cache.parent.mkdir(exist_ok=True)
        atomic_write_text(cache, json.dumps(res.to_dict()))
      out[name] = SuiteResult(**json.loads(cache.read_text()))
    self._time("eval", label, t, cached=ev is None)
    return out

  def run(self) -> dict:
    """Train and evaluate every condition; returns {Condition: {seed: {suite: SuiteResult}}}
    (seedless conditions as keys)."""
    results: dict[Condition, dict] = {}
    evals: dict[Path, dict] = {}  # a shared base is evaluated once
    for s in self.exp.seeds:
      for cond in self.conditions:
        run = self.run_of(cond.at(s))[1]
        if run not in evals:
          evals[run] = self.evaluate(base_run(self.exp, cond.at(s)).run_label
                                     if cond.parent is None else cond.at(s).run_label, run,
                                     self.suites(cond))
        results.setdefault(cond, {})[s] = evals[run]
    return results
