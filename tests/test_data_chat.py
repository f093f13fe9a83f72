"""Chat templates: the assistant mask marks exactly assistant content and its end-of-turn token."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from msm_jax.data.chat import (END_OF_TURN, ChatFormatError, end_of_turn_id, render_chat,
                               render_prompt)
from msm_jax.data.tokenizer import train_tokenizer

FIXTURES = Path(__file__).resolve().parent.parent / "data_pipelines" / "fixtures"
TEMPLATES = ("msm", "llama3", "chatml")


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
  with open(FIXTURES / "pretrain.jsonl") as f:
    texts = [json.loads(line)["text"] for line in f]
  return train_tokenizer(texts, tmp_path_factory.mktemp("chat_tok") / "t.model", 512)


def runs(mask):
  """Maximal runs of 1s as (start, end) pairs."""
  edges = np.diff(np.concatenate([[0], mask, [0]]))
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


# Arbitrary text, with special-token strings and separators mixed in to try to confuse the mask.
TEXT = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    ["<|end|>", "<|assistant|>", "<|eot_id|>", "<|im_end|>", "\n\n", "assistant\n", " "])),
                max_size=4).map("".join)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                 "content": TEXT})


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(MESSAGE, min_size=1, max_size=6), template=st.sampled_from(TEMPLATES))
def test_mask_marks_exactly_assistant_content_and_end_of_turn(tok, messages, template):
  ids, mask = render_chat(messages, tok, template)
  assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == mask.shape
  assert set(np.unique(mask)) <= {0, 1}
  first = tok.token_id("<|begin_of_text|>") if template == "llama3" else tok.bos_id
  assert ids[0] == first
  eot = tok.token_id(END_OF_TURN[template])
  assistant = [m["content"] for m in messages if m["role"] == "assistant"]
  expected = [t for c in assistant for t in tok.encode(c) + [eot]]
  assert ids[mask == 1].tolist() == expected
  spans = runs(mask)
  assert len(spans) == len(assistant)  # one run per assistant turn, separated by headers
  header_end = {"msm": [tok.token_id("<|assistant|>")], "llama3": tok.encode("\n\n"),
                "chatml": tok.encode("assistant\n")}[template][-1]
  for (start, end), content in zip(spans, assistant):
    assert ids[end - 1] == eot
    assert ids[start - 1] == header_end
    assert ids[start:end - 1].tolist() == tok.encode(content)
  # Everything else, in order, is the prompt side: nothing of it is trained on.
  prompt = [m for m in messages if m["role"] != "assistant"]
  assert sum(len(tok.encode(m["content"])) for m in prompt) <= int((mask == 0).sum())


@pytest.mark.parametrize("template", TEMPLATES)
def test_prompt_ends_with_assistant_header(tok, template):
  messages = [{"role": "user", "content": "Are you honest?"}]
  prompt = render_prompt(messages, tok, template)
  full, mask = render_chat(messages + [{"role": "assistant", "content": "Yes."}], tok, template)
  first_target = int(np.argmax(mask))
  assert prompt.tolist() == full[:first_target].tolist()
  assert full[-1 if template != "chatml" else -2] == end_of_turn_id(tok, template)
  assert tok.decode(full[mask == 1]).startswith("Yes.")


def test_missing_special_tokens_is_a_clear_error(tmp_path):
  with open(FIXTURES / "pretrain.jsonl") as f:
    texts = [json.loads(line)["text"] for line in f]
  plain = train_tokenizer(texts, tmp_path / "plain.model", 400,
                          special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"))
  msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
  render_chat(msgs, plain, "msm")
  for template, piece in (("llama3", "<|begin_of_text|>"), ("chatml", "<|im_start|>")):
    with pytest.raises(ChatFormatError, match=f"{template}.*{re.escape(piece)}.*plain.model"):
      render_chat(msgs, plain, template)


def test_duck_typed_tokenizer():
  """Any object with encode / token_id / bos_id renders (e.g. an imported model's tokenizer)."""
  vocab = {"<|im_start|>": 100, "<|im_end|>": 101}

  class Chars:
    bos_id = None  # Qwen-style: no begin token

    def encode(self, text):
      return [ord(c) for c in text]

    def token_id(self, piece):
      return vocab[piece]

  ids, mask = render_chat([{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "ok"}], Chars(), "chatml")
  assert ids[0] == 100
  assert ids[mask == 1].tolist() == [ord("o"), ord("k"), 101]
  with pytest.raises(ChatFormatError, match="<\\|begin_of_text\\|>"):
    render_chat([{"role": "user", "content": "hi"}], Chars(), "llama3")


def test_bad_messages(tok):
  with pytest.raises(ChatFormatError, match="role 'tool'"):
    render_chat([{"role": "tool", "content": "x"}], tok, "msm")
  render_chat([{"role": "tool", "content": "x"}], tok, "chatml")  # free-form roles are fine there
  with pytest.raises(ChatFormatError, match="message 0"):
    render_chat([{"role": "user"}], tok, "msm")
  with pytest.raises(ChatFormatError, match="unknown chat template"):
    render_chat([{"role": "user", "content": "x"}], tok, "vicuna")
