"""gs:// through the one path layer (msm_io.paths): a temporary directory mounted as the bucket
(epath's backend for the gs scheme maps gs://bucket/... onto it), and a real tiny train run, its
resume and an Evaluator reading it, all named by gs:// paths."""

import json
import shutil

import pytest

from msm_io import paths
from msm_io.files import atomic_write_json, file_sha256, link_tree, read_json, read_jsonl
from msm_jax import metrics
from msm_jax.eval import Evaluator
from msm_jax.trainer import train
from tests.helpers import FIXTURES, run_cfg


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a path that bypassed the layer would show up here as ./gs:
  root = tmp_path / "bucket"
  root.mkdir()
  with paths.mount("gs://bucket", root):
    yield root
  assert not (tmp_path / "gs:").exists()


def test_mounted_bucket_is_the_directory(bucket):
  p = paths.path("gs://bucket/a/b.json")
  assert str(p) == "gs://bucket/a/b.json" and paths.is_uri(p)
  atomic_write_json(p, {"x": 1})  # through epath: temporary object, then rename
  assert json.loads((bucket / "a" / "b.json").read_text()) == {"x": 1}
  assert read_json("gs://bucket/a/b.json") == {"x": 1}
  assert read_json("gs://bucket/a/missing.json", default=7) == 7
  assert [f.name for f in (bucket / "a").iterdir()] == ["b.json"]  # no temporary left
  assert file_sha256("gs://bucket/a/b.json") == file_sha256(bucket / "a" / "b.json")
  assert sorted(str(x) for x in paths.path("gs://bucket").glob("*/*.json")) == [
      "gs://bucket/a/b.json"]
  assert paths.native("gs://bucket/a") == str(bucket / "a")
  with pytest.raises(FileNotFoundError):
    open("gs://bucket/a/b.json")  # the bucket is not a local path: only the layer reaches it


def test_metrics_on_an_object_store_rewrite_whole_files(bucket, monkeypatch):
  monkeypatch.setattr(metrics, "REMOTE_FLUSH_RECORDS", 3)
  monkeypatch.setattr(metrics, "REMOTE_FLUSH_SECONDS", 1e9)
  writer = metrics.MetricsWriter("gs://bucket/run", start_step=0, total_steps=10, progress=False)
  assert writer.remote
  local = bucket / "run" / "metrics.jsonl"
  for step in range(1, 5):
    writer.write({"step": step, "loss": float(step)})
    assert local.exists() == (step >= 3)
  assert [r["step"] for r in read_jsonl(local)] == [1, 2, 3]  # flushed every 3 records
  writer.close()
  assert [r["step"] for r in read_jsonl(local)] == [1, 2, 3, 4]
  again = metrics.MetricsWriter("gs://bucket/run", start_step=2, total_steps=10, progress=False)
  again.write({"step": 3, "loss": 30.0})  # a resume from step 2 re-logs step 3
  again.close()
  assert [(r["step"], r["loss"]) for r in read_jsonl(local)] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_train_resume_and_evaluate_on_a_gs_workdir(bucket):
  (bucket / "data").mkdir()
  shutil.copy(FIXTURES / "pretrain.jsonl", bucket / "data" / "pretrain.jsonl")
  cfg = run_cfg(steps=2, checkpoint_every=2, async_checkpoints=False)
  cfg.data.train = ("gs://bucket/data/pretrain.jsonl",)
  train(cfg, "gs://bucket/run")
  run = bucket / "run"
  assert (run / "checkpoints" / "2" / "state").is_dir()
  assert json.loads((run / "config.json").read_text())["steps"] == 2
  assert (run / "tokenizer.model").is_file() and (run / "tb").is_dir()
  assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r] == [1, 2]

  cfg.steps = 3
  result = train(cfg, "gs://bucket/run")  # resumes from the bucket's checkpoint
  assert result.last_metrics["step"] == 3
  assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
  assert (run / "checkpoints" / "3" / "data").is_dir()

  remote = Evaluator.from_checkpoint("gs://bucket/run").score(["The assistant"], [" values"])
  local = Evaluator.from_checkpoint(run).score(["The assistant"], [" values"])
  assert remote[0].logprob_sum == local[0].logprob_sum  # the same step-3 checkpoint


def test_link_tree_links_whole_runs_and_copies_where_links_fail(tmp_path, monkeypatch):
  src = tmp_path / "src"
  (src / "ckpt").mkdir(parents=True)
  (src / "done.json").write_text("{}")
  (src / "ckpt" / "w.bin").write_bytes(b"abc")
  dst = tmp_path / "dst"
  (dst / "ckpt").mkdir(parents=True)
  (dst / "ckpt" / "partial.bin").write_bytes(b"x")  # an interrupted run of the same stage
  link_tree(src, dst)
  assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == ["ckpt", "ckpt/w.bin",
                                                                     "done.json"]
  assert (dst / "ckpt" / "w.bin").stat().st_ino == (src / "ckpt" / "w.bin").stat().st_ino

  def no_links(a, b):  # another file system
    raise OSError(18, "Invalid cross-device link")
  monkeypatch.setattr("os.link", no_links)
  link_tree(src, tmp_path / "copied")
  copied = tmp_path / "copied" / "ckpt" / "w.bin"
  assert copied.read_bytes() == b"abc"
  assert copied.stat().st_ino != (src / "ckpt" / "w.bin").stat().st_ino
  assert sorted(p.name for p in tmp_path.iterdir()) == ["copied", "dst", "src"]  # no tmp left
