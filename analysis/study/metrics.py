"""The metrics a study compares (analysis/study/combined_report.py) and where each is read: ``EVAL`` from a run's
``eval.jsonl`` (held-out behaviour logged by ``make train``), ``FIXED`` from its analysis ``summary.json`` (the
fixed-text headline per checkpoint), the default primary outcome, and the question each headline metric answers.

Why a module of its own: the report, the per-run finals table and the study driver (which checks a preset's
primary outcome names a metric) all read these names; kept in the report they made the report and its helpers
import each other.
"""

from __future__ import annotations

EVAL = {
    "success": "success_rate",
    "false accepts | wrong": "false_accept_given_wrong",
    "false rejects | right": "false_reject_given_right",
    "lines per completion": "lines_per_completion",
    "completions with verdict lines": "verdict_share",
    "attempt lines with a verdict": "verdict_line_share",
    "repeated attempt lines": "repeated_lines",
    "fabricated equalities": "fabricated_equalities",
    "identical lines with both verdicts": "both_verdicts",
}
# metric -> the path of keys into one ``fixed_text.per_step`` entry of a run's analysis summary.json (a dict with a
# "value" is read at its value; a missing key gives no value). Edit here when that headline's keys change.
FIXED = {
    "fixed text: accepts slips": ("accepts", "slip"),
    "fixed text: accepts right lines": ("accepts", "right"),
    "fixed text: content effect": ("content_effect",),
    "fixed text: position effect": ("position_effect",),
    "fixed text: verdict probe AUROC": ("verdict_probe_auroc",),
    "fixed text: truth probe AUROC (value)": ("truth_probe_auroc_at_value",),
    "fixed text: verdict probe AUROC minus logit lens": ("verdict_probe_minus_lens",),
    "fixed text: accepts right lines minus slips": ("content_effect_slip",),
    "fixed text: steering with the final direction minus random": ("steer_paren", "final_minus_random"),
    "fixed text: steering with the final direction minus logit": ("steer_paren", "final_minus_logit"),
}
METRICS = (*EVAL, *FIXED)
PRIMARY = "completions with verdict lines"  # the study presets' primary outcome unless they name another
# metric -> (the question, the direction it asks about: -1 RL lowers it more than the control, +1 raises it more)
QUESTIONS = {
    "completions with verdict lines": (
        "Does the share of held-out completions that write verdict lines rise more under RL than under the control?",
        +1,
    ),
    "success": ("Does held-out success rise more under RL than under the control?", +1),
    "false accepts | wrong": ("Do false accepts fall more under RL than under the control?", -1),
    "fixed text: verdict probe AUROC": (
        "Does the verdict direction become more readable (probe AUROC rises more) under RL than under the control?",
        +1,
    ),
    "fixed text: truth probe AUROC (value)": (
        "Does the truth direction become more readable (probe AUROC at the value rises more) under RL than under "
        "the control?",
        +1,
    ),
    "fixed text: verdict probe AUROC minus logit lens": (
        "Does the verdict direction become readable beyond the logit lens more under RL than under the control?",
        +1,
    ),
    "fixed text: accepts right lines minus slips": (
        "Do the verdicts follow the arithmetic (right lines accepted more than slips) more under RL?",
        +1,
    ),
    "fixed text: steering with the final direction minus random": (
        "Does steering with the final direction (beyond a random one) move the verdict more under RL?",
        +1,
    ),
}
