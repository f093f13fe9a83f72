"""The evaluation harness: score and sample checkpoints, run suites, compare, report.

    from msm_jax.eval import Evaluator, run_suite, compare, write_report
    ev = Evaluator.from_checkpoint("runs/msm/finetune")
    ev.score(["The capital of France is"], [" Paris"])
    ev.generate([[{"role": "user", "content": "Brie or cheddar?"}]], max_new_tokens=32)
    result = run_suite(ev, "suites/preferences.jsonl")

See docs/eval.md.
"""

from msm_jax.eval.evaluator import Chat, Evaluator
from msm_jax.eval.graders import LLMGrader, ReferenceLogprobGrader
from msm_jax.eval.loading import NonFiniteError
from msm_jax.eval.report import write_report
from msm_jax.eval.sampling import Generation, SamplingParams
from msm_jax.eval.scoring import ChoiceRecord, ScoreRecord
from msm_jax.eval.stats import aggregate, bootstrap_ci, compare, mean_sem, paired_bootstrap
from msm_jax.eval.suites import SuiteError, SuiteResult, load_suite, parse_choice, run_suite

__all__ = [
    "Chat", "ChoiceRecord", "Evaluator", "Generation", "LLMGrader", "NonFiniteError", "ReferenceLogprobGrader",
    "SamplingParams", "ScoreRecord", "SuiteError", "SuiteResult", "aggregate", "bootstrap_ci",
    "compare", "load_suite", "mean_sem", "paired_bootstrap", "parse_choice", "run_suite",
    "write_report",
]
