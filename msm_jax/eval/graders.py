"""Graders for open questions: how good is a free-text answer?

A grader has a `name` and `grade(evaluator, items, prompts, answers) -> [per-item dict]`, each
dict mapping metric names to a value (None when it has none for that item) plus an optional
`"detail"` kept in the record. Two come with the harness:

- `ReferenceLogprobGrader` (offline, the default): how likely the evaluated model finds the
  item's reference answer, and whether it prefers it over the item's distractors. It grades the
  model's knowledge, not the generated text, so it needs no second model.
- `LLMGrader(complete)`: a judge model reads the question, rubric, reference and answer and
  gives a 0-10 score. `complete` is any `str -> str` function: an API client (the data
  pipeline's LLM backend, once configured), or another `Evaluator`, e.g.
  `lambda p: judge.generate([[{"role": "user", "content": p}]], 256)[0].text`.
"""

from __future__ import annotations

import re
from typing import Callable

JUDGE_TEMPLATE = """You are grading an AI assistant's answer to a question.

Question:
{question}

Rubric (what a good answer does):
{rubric}

Reference answer:
{reference}

The assistant's answer:
{answer}

Rate how well the assistant's answer meets the rubric, from 0 (not at all) to 10 (fully).
Reply with a short justification, then a last line of the form "SCORE: <number>"."""

_SCORE = re.compile(r"SCORE:\s*([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)


class ReferenceLogprobGrader:
  """reference_logprob: per-token log-prob of the reference answer after the prompt;
  reference_preferred (items with `distractors`): 1 if the reference beats every distractor by
  per-token log-prob, else 0."""

  name = "reference_logprob"

  def grade(self, evaluator, items, prompts, answers) -> list[dict]:
    contexts, options = [], []
    for it, prompt in zip(items, prompts):
      contexts.append(prompt)
      options.append([it["reference"], *it.get("distractors", [])])
    choices = evaluator.forced_choice(contexts, options, length_normalize=True)
    out = []
    for it, ch in zip(items, choices):
      grade = {"reference_logprob": ch.option_scores[0]}
      if it.get("distractors"):
        grade["reference_preferred"] = float(ch.choice == 0)
      out.append(grade)
    return out


class LLMGrader:
  """Scores answers with a judge model: llm_score in [0, 1] (None when the judge's reply has no
  SCORE line) and llm_parse_rate."""

  def __init__(self, complete: Callable[[str], str], *, template: str = JUDGE_TEMPLATE,
               max_score: float = 10.0, name: str = "llm"):
    self.complete, self.template, self.max_score, self.name = complete, template, max_score, name

  def judge_prompt(self, item: dict, answer: str) -> str:
    return self.template.format(question=item["prompt"], rubric=item.get("rubric", "(none)"),
                                reference=item["reference"], answer=answer)

  def parse(self, reply: str) -> float | None:
    found = _SCORE.findall(reply or "")
    if not found:
      return None
    return min(max(float(found[-1]) / self.max_score, 0.0), 1.0)

  def grade(self, evaluator, items, prompts, answers) -> list[dict]:
    out = []
    for it, answer in zip(items, answers):
      if answer is None:
        out.append({"llm_score": None, "llm_parse_rate": None})
        continue
      reply = self.complete(self.judge_prompt(it, answer))
      score = self.parse(reply)
      out.append({"llm_score": score, "llm_parse_rate": float(score is not None),
                  "detail": reply})
    return out
