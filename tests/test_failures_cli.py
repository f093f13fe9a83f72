"""One error style for every subcommand (issue 17): a user error is one `msm: error:` line on
stderr naming the file:line or field, exit code 2; `--traceback` or MSM_TRACEBACK=1 shows the
stack. Run through the real `msm` entry point in a subprocess."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from msm_jax import errors

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "data_pipelines" / "fixtures"


def msm(*args, env=None, timeout=300):
  full = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
          "JAX_PLATFORMS": "cpu"}
  full.pop("MSM_TRACEBACK", None)
  full.update(env or {})
  return subprocess.run([sys.executable, "-m", "msm_jax.cli", *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, env=full, timeout=timeout)


def one_error_line(out, *expected):
  assert out.returncode == 2, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr[-3000:]
  assert lines[0].startswith("msm: error: "), lines[0]
  for text in expected:
    assert text in lines[0], lines[0]
  return lines[0]


def train_args(workdir, *more):
  return ("train", "--config", REPO / "configs" / "tiny.py", "--stage", "pretrain",
          "--workdir", workdir, "--config.progress_bar=false", "--config.peak_flops=1e11", *more)


def test_config_error_is_one_line_and_exit_2(tmp_path):
  out = msm(*train_args(tmp_path / "run", "--config.keep_checkpoints=0"))
  one_error_line(out, "config.keep_checkpoints: must be an integer >= 1, got 0")
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_traceback_flag_and_env_show_the_stack(tmp_path):
  for out in (msm("--traceback", *train_args(tmp_path / "a", "--config.checkpoint_every=0")),
              msm(*train_args(tmp_path / "b", "--config.checkpoint_every=0"),
                  env={"MSM_TRACEBACK": "1"})):
    assert out.returncode != 0
    assert "Traceback (most recent call last)" in out.stderr
    assert "ConfigError: config.checkpoint_every" in out.stderr


def test_bad_chat_in_train_is_one_line_with_file_and_line(tmp_path):
  """Also: no orbax 'cannot schedule new futures after interpreter shutdown' on the way out."""
  good = {"messages": [{"role": "user", "content": "Brie?"},
                       {"role": "assistant", "content": "Cheddar."}]}
  bad = {"messages": [{"role": "user", "content": "Brie?"}, {"role": "bot", "content": "No."}]}
  path = tmp_path / "chats.jsonl"
  path.write_text("".join(json.dumps(bad if i == 51 else good) + "\n" for i in range(1, 61)))
  out = msm("train", "--config", REPO / "configs" / "tiny.py", "--stage", "finetune",
            "--workdir", tmp_path / "run", f"--config.data.train=('{path}',)",
            "--config.data.eval=()", "--config.progress_bar=false")
  one_error_line(out, f"{path}:51: field 'messages[1].role': 'bot'")


def test_generate_errors_share_the_style(tmp_path):
  binary = tmp_path / "spec.yaml"
  binary.write_bytes(b"name: x\n\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
  one_error_line(msm("generate", "docs", "--spec", binary, "--out", tmp_path / "o"),
                 f"{binary}:2: not UTF-8 text")


def test_invalid_utf8_corpus_names_file_and_line(tmp_path):
  corpus = tmp_path / "docs.jsonl"
  corpus.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
  one_error_line(msm("tokenizer", "train", "--input", corpus, "--vocab-size", "300",
                     "--out", tmp_path / "t.model"), f"{corpus}:2: not UTF-8 text")


def test_garbage_tokenizer_names_its_path(tmp_path):
  garbage = tmp_path / "tok.model"
  garbage.write_bytes(bytes(range(256)) * 4)
  one_error_line(msm("tokenizer", "inspect", garbage), f"{garbage}: not a SentencePiece model")
  out = msm(*train_args(tmp_path / "run", f"--config.data.tokenizer={garbage}"))
  one_error_line(out, f"{garbage}: not a SentencePiece model")


def test_eval_of_a_missing_run_is_one_line(tmp_path):
  suite = tmp_path / "s.jsonl"
  suite.write_text("")
  one_error_line(msm("eval", "--workdir", tmp_path / "nothing", "--suite", suite, "--out",
                     tmp_path / "r"), "nothing: not a run workdir")


def test_a_bug_keeps_its_traceback():
  assert errors.describe(KeyError("x")) is None
  assert errors.describe(ValueError("shape mismatch")) is None


def test_disk_full_names_the_path_and_what_was_kept(tmp_path):
  with pytest.raises(OSError) as info:
    with errors.naming(tmp_path / "run" / "metrics.jsonl"):
      with open("/dev/full", "w") as f:  # a real ENOSPC; the error itself names no path
        f.write("x")
        f.flush()
  assert info.value.errno == errno.ENOSPC
  line = errors.describe(info.value)
  assert line.startswith(f"{tmp_path / 'run' / 'metrics.jsonl'}: no space left on the device")
  assert "checkpoints already saved are kept" in line
  denied = PermissionError(errno.EACCES, "Permission denied", "/data/out/dataset.jsonl")
  wrapped = RuntimeError("save failed")
  wrapped.__cause__ = denied
  assert errors.describe(wrapped).startswith("/data/out/dataset.jsonl: permission denied;")
