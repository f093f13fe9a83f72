"""Chat templates: messages -> token ids plus a per-token assistant loss mask.

Rendering works segment by segment (special tokens by id, text through `tokenizer.encode`), so
the mask is exact by construction: it is 1 on the tokens of each assistant message's content and
on that turn's end-of-turn token, 0 everywhere else (headers, prompts, separators). Rendering
never re-tokenises the joined string, so a token can never straddle a role boundary.

Templates:
  msm     the project's own: <s> then, per message, <|role|> content <|end|>
  llama3  <|begin_of_text|> then <|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>
  chatml  <s> then <|im_start|>role\\n content <|im_end|>\\n  (Qwen style)

`tokenizer` is anything with `encode(str) -> list[int]`, `token_id(piece) -> int` and `bos_id`:
the project's SentencePiece `Tokenizer`, or an adapter around an imported model's tokenizer.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

MSM_ROLES = ("system", "user", "assistant")

TEMPLATE_TOKENS = {
    "msm": ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    "llama3": ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "chatml": ("<|im_start|>", "<|im_end|>"),
}
# What `train_tokenizer` reserves by default, so one project tokenizer renders every template.
ALL_SPECIAL_TOKENS = tuple(t for toks in TEMPLATE_TOKENS.values() for t in toks)

END_OF_TURN = {"msm": "<|end|>", "llama3": "<|eot_id|>", "chatml": "<|im_end|>"}
# Qwen3's template writes an empty reasoning block into non-thinking assistant turns: boilerplate,
# never a training target (reasoning inside the block is supervised like any content).
EMPTY_THINK = re.compile(r"<think>\s*</think>\s*")


class ChatFormatError(ValueError):
  """A message list or a tokenizer that a template cannot render."""


def _special_ids(tokenizer, template: str) -> dict[str, int]:
  """The template's special-token ids; one error listing every piece the tokenizer lacks."""
  ids, missing = {}, []
  for piece in TEMPLATE_TOKENS[template]:
    try:
      ids[piece] = int(tokenizer.token_id(piece))
    except KeyError:
      missing.append(piece)
  if missing:
    where = getattr(tokenizer, "path", "") or type(tokenizer).__name__
    raise ChatFormatError(
        f"chat template {template!r} needs the special tokens {missing}, which the tokenizer "
        f"({where}) does not have. Train a tokenizer that includes them (`msm tokenizer train` "
        f"reserves every template's tokens) or set config.data.chat_template='msm'.")
  return ids


def _check_template(template: str) -> None:
  if template not in TEMPLATE_TOKENS:
    raise ChatFormatError(f"unknown chat template {template!r}; choose one of "
                          f"{sorted(TEMPLATE_TOKENS)} (config.data.chat_template)")


def _check_messages(messages: Sequence[Any], template: str) -> None:
  if not isinstance(messages, (list, tuple)) or not messages:
    raise ChatFormatError("a chat must be a non-empty list of messages")
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
        m.get("content"), str):
      raise ChatFormatError(f"message {i}: need a dict with string 'role' and 'content', got "
                            f"{m!r:.200}")
    if template == "msm" and m["role"] not in MSM_ROLES:
      raise ChatFormatError(f"message {i}: role {m['role']!r} is not one of {MSM_ROLES} "
                            "(the msm template has no token for it)")


def _segments(messages, tokenizer, template: str, add_generation_prompt: bool):
  """Yields (ids, is_assistant_target) segments in order."""
  special = _special_ids(tokenizer, template)
  tok = lambda piece: [special[piece]]
  eot = tok(END_OF_TURN[template])
  if template == "llama3":
    yield tok("<|begin_of_text|>"), False
  else:
    bos = getattr(tokenizer, "bos_id", None)
    if bos is not None and bos >= 0:
      yield [int(bos)], False
  for m in messages:
    role, content = m["role"], m["content"]
    is_asst = role == "assistant"
    if template == "msm":
      yield tok(f"<|{role}|>"), False
    elif template == "llama3":
      yield tok("<|start_header_id|>") + tokenizer.encode(role) + tok("<|end_header_id|>") + \
          tokenizer.encode("\n\n"), False
    else:
      yield tok("<|im_start|>") + tokenizer.encode(f"{role}\n"), False
    think = EMPTY_THINK.match(content) if is_asst else None
    if think:
      yield list(tokenizer.encode(think.group(0))), False
      content = content[think.end():]
    yield list(tokenizer.encode(content)), is_asst
    yield eot, is_asst
    if template == "chatml":
      yield tokenizer.encode("\n"), False
  if add_generation_prompt:
    if template == "msm":
      yield tok("<|assistant|>"), False
    elif template == "llama3":
      yield tok("<|start_header_id|>") + tokenizer.encode("assistant") + \
          tok("<|end_header_id|>") + tokenizer.encode("\n\n"), False
    else:
      yield tok("<|im_start|>") + tokenizer.encode("assistant\n"), False


def render_chat(messages: Sequence[dict], tokenizer, template: str = "msm"
                ) -> tuple[np.ndarray, np.ndarray]:
  """Token ids (int32, starting with the template's begin token) and the assistant mask (int32).

  The mask marks exactly the assistant content tokens and each assistant turn's end-of-turn token:
  what finetuning trains on. A leading empty `<think></think>` block (Qwen3) stays 0.
  """
  _check_template(template)
  _check_messages(messages, template)
  ids, mask = [], []
  for seg, on in _segments(messages, tokenizer, template, add_generation_prompt=False):
    ids.extend(seg)
    mask.extend([int(on)] * len(seg))
  return np.asarray(ids, np.int32), np.asarray(mask, np.int32)


def render_prompt(messages: Sequence[dict], tokenizer, template: str = "msm") -> np.ndarray:
  """Token ids (int32) of the conversation so far, ending with an open assistant header.

  For generation: sample until `end_of_turn_id(tokenizer, template)`.
  """
  _check_template(template)
  _check_messages(messages, template)
  ids = []
  for seg, _ in _segments(messages, tokenizer, template, add_generation_prompt=True):
    ids.extend(seg)
  return np.asarray(ids, np.int32)


def end_of_turn_id(tokenizer, template: str = "msm") -> int:
  """The token that closes an assistant turn (the stop token for sampling)."""
  _check_template(template)
  return _special_ids(tokenizer, template)[END_OF_TURN[template]]


def chat_text(messages: Sequence[dict]) -> str:
  """All message contents joined, for tokenizer training."""
  return "\n".join(m.get("content", "") for m in messages if isinstance(m, dict))
