"""Checkpoint layout and resume bookkeeping, and the verification metrics, on real files and texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.countdown.generate import Problem
from tasks.countdown.solve import count_solutions
from train import checkpoints as ck
from train.config import load_train_config
from train.evaluate import score_completions


class FakeTokenizer:  # stands in only for save_pretrained's side effect
    def save_pretrained(self, path: Path) -> None:
        (Path(path) / "tokenizer.json").write_text("{}")


def test_finalize_is_atomic_and_discoverable(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (0, 20, 40):
        src = run / ck.STAGING / f"checkpoint-{step}"
        src.mkdir(parents=True)
        (src / "model.safetensors").write_bytes(b"x")
        ck.finalize(src, run, step, FakeTokenizer(), {"metrics": {}})
    half = run / "step_60"  # a directory without state.json is never listed
    half.mkdir()
    assert [s for s, _ in ck.list_checkpoints(run)] == [0, 20, 40]
    assert ck.latest_checkpoint(run)[0] == 40
    state = json.loads((run / "step_40" / ck.STATE_FILE).read_text())
    assert state["step"] == 40 and (run / "step_40" / "tokenizer.json").is_file()


def test_run_dir_is_never_overwritten_and_resume_checks_config(tmp_path: Path) -> None:
    cfg = load_train_config("tiny", [f"output_root={tmp_path}"])
    run, last = ck.prepare_run_dir(cfg, resume=False)
    assert last is None and (run / "config.yaml").is_file()
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ck.RunExists, match="RESUME=1"):
        ck.prepare_run_dir(cfg, resume=False)
    longer = load_train_config("tiny", [f"output_root={tmp_path}", "grpo.steps=200"])
    assert ck.prepare_run_dir(longer, resume=True)[0] == run  # only the step budget may change
    other = load_train_config("tiny", [f"output_root={tmp_path}", "grpo.learning_rate=0.5"])
    with pytest.raises(ValueError, match="differs in grpo.learning_rate"):
        ck.prepare_run_dir(other, resume=True)
    # a run saved by an older version that lacked a field resumes when the field keeps its default
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["base"]["trace"]["verdict_rate"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert ck.prepare_run_dir(longer, resume=True)[0] == run
    emerge = load_train_config("tiny", [f"output_root={tmp_path}", "base.trace.verdict_rate=0.5"])
    with pytest.raises(ValueError, match="differs in base.trace.verdict_rate"):
        ck.prepare_run_dir(emerge, resume=True)


def test_truncate_jsonl_drops_steps_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    for s in range(1, 8):
        ck.append_jsonl(path, {"step": s})
    ck.truncate_jsonl(path, 5)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_verification_metrics_count_what_was_written() -> None:
    p = Problem((1, 2, 3), 6)
    texts = [
        # wrong line rejected, right line accepted, correct answer
        "\n- 1 + 2 - 3 = 0 (not 6)\n- 1 + 2 + 3 = 6 (this works)\n</think>\n<answer> 1 + 2 + 3 </answer>",
        # wrong line accepted (false accept), wrong answer
        "\n- 3 - 2 + 1 = 2 (this works)\n</think>\n<answer> 3 - 2 + 1 </answer>",
        # right line rejected (false reject), no answer
        "\n- 3 + 2 + 1 = 6 (not 6)\n- 3 + 2 - 1 = 5 (not 6)",
    ]
    m = score_completions([p, p, p], [[t] for t in texts], [[False], [False], [True]])
    assert m.completions == 3 and m.success_rate == pytest.approx(1 / 3) and m.format_rate == pytest.approx(2 / 3)
    assert m.lines_per_completion == pytest.approx(5 / 3) and m.truncation_rate == pytest.approx(1 / 3)
    assert m.line_false_accept == pytest.approx(1 / 5) and m.line_false_reject == pytest.approx(1 / 5)
    assert m.false_accept_given_wrong == pytest.approx(1 / 3) and m.false_reject_given_right == pytest.approx(1 / 2)
    assert m.line_verdict_matches_truth == pytest.approx(3 / 5)
    assert m.line_verdict_follows_written == pytest.approx(3 / 5)  # "2 (this works)" and "6 (not 6)" break it


def test_success_change_has_a_paired_standard_error(tmp_path: Path) -> None:
    """Per-problem success counts are recorded, and summary.json carries the paired standard error of the gain."""
    import statistics

    from train.evaluate import paired_gain_se
    from train.run_summary import summarize

    p, q = Problem((1, 2, 3), 6), Problem((2, 2, 5), 9)
    right, wrong = "\n</think>\n<answer> 1 + 2 + 3 </answer>", "\n</think>\n<answer> 1 + 2 - 3 </answer>"
    m = score_completions([p, p, q], [[right, wrong], [right, right], [wrong, wrong]])
    assert m.solved_per_problem == (1, 2, 0) and m.as_dict()["solved_per_problem"] == (1, 2, 0)

    first, final = [0, 1, 2, 0, 1, 0], [2, 1, 2, 1, 4, 0]  # 4 samples per problem
    diffs = [(b - a) / 4 for a, b in zip(first, final, strict=True)]
    assert paired_gain_se(first, final, 4) == pytest.approx(statistics.stdev(diffs) / len(diffs) ** 0.5)
    assert paired_gain_se(first, first, 4) == 0.0  # the same answers: no uncertainty about a zero change
    assert paired_gain_se(first, final[:3], 4) is None and paired_gain_se([], [], 4) is None

    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"step": 0, "completions": 24, "solved_per_problem": first},
        {"step": 5, "completions": 24, "solved_per_problem": final},
    ]
    for row in rows:
        row.update({k: 0.0 for k in ("format_rate", "false_accept_given_wrong", "false_reject_given_right")})
        row.update({k: 0.0 for k in ("line_verdict_matches_truth", "line_false_accept", "line_false_reject")})
        row.update(lines_per_completion=0.0, truncation_rate=0.0, success_rate=sum(row["solved_per_problem"]) / 24)
        ck.append_jsonl(run / "eval.jsonl", row)
    summary = summarize(run)
    assert summary["success_gain_points"] == pytest.approx(100 * 6 / 24)
    assert summary["success_gain_se_points"] == pytest.approx(100 * paired_gain_se(first, final, 4))

    # split by the problems' number of ways: three one-way problems, three with several
    problems = [Problem((5, 5, 3), 2), Problem((4, 6, 9), 6), Problem((3, 8, 11), 9)]
    problems += [Problem((3, 4, 5), 12), Problem((3, 4, 5), 60), Problem((2, 2, 2), 8)]
    ways = [count_solutions(p.numbers, p.target) for p in problems]
    assert [w == 1 for w in ways] == [True] * 3 + [False] * 3, ways
    split = summarize(run, problems, load_train_config("tiny-cue"))["success_by_ways"]
    assert split["1"] == {"problems": 3, "first": pytest.approx(3 / 12), "final": pytest.approx(5 / 12)}
    assert split["2+"] == {"problems": 3, "first": pytest.approx(1 / 12), "final": pytest.approx(5 / 12)}
    assert summary["success_by_ways"] is None  # without the problems there is nothing to split


def test_rate_changes_get_a_paired_bootstrap_interval(tmp_path: Path) -> None:
    """Per-problem [numerator, denominator] counts are logged, and each change's interval pairs the problems."""
    from train.evaluate import paired_change_ci, rate_changes

    p = Problem((1, 2, 3), 6)
    right = "- 1 + 2 + 3 = 6 (this works)\n</think>\n<answer> 1 + 2 + 3 </answer>"
    wrong = "- 1 + 2 - 3 = 6 (this works)\n</think>\n<answer> 1 + 2 - 3 </answer>"
    bare = "\n</think>\n<answer> 1 + 2 + 3 </answer>"
    m = score_completions([p, p], [[right, wrong], [bare, bare]])
    assert m.per_problem["verdict_share"] == ((2, 2), (0, 2)) and m.verdict_share == pytest.approx(0.5)
    assert m.per_problem["false_accept_given_wrong"] == ((1, 1), (0, 0))
    assert set(m.per_problem) == {
        "verdict_share", "line_verdict_matches_truth", "false_accept_given_wrong", "success_verifying", "success_plain"
    }  # fmt: skip
    # problem 0's two completions both write verdict lines, problem 1's neither: success is split by that style
    assert m.per_problem["success_verifying"][1] == (0, 0) and m.per_problem["success_plain"][0] == (0, 0)
    assert m.per_problem["success_verifying"][0][1] == 2 and m.per_problem["success_plain"][1][1] == 2
    assert m.solved_per_problem == (1, 2)

    first = [(1, 4)] * 50 + [(0, 4)] * 50  # 12.5%
    final = [(3, 4)] * 50 + [(2, 4)] * 50  # 62.5%: every problem gains 2 of 4
    ci = paired_change_ci(first, final)
    assert ci["value"] == pytest.approx(0.5) and ci["lo"] == pytest.approx(0.5) and ci["hi"] == pytest.approx(0.5)
    shuffled = final[50:] + final[:50]  # the same rates, unpaired gains: the interval widens around 0.5
    wide = paired_change_ci(first, shuffled)
    assert wide["value"] == pytest.approx(0.5) and wide["lo"] < 0.47 < 0.53 < wide["hi"]
    assert paired_change_ci(first, final[:10]) is None and paired_change_ci([(0, 0)], [(1, 1)]) is None
    rows = {"per_problem": {"verdict_share": first}}, {"per_problem": {"verdict_share": final}}
    out = rate_changes(*rows)
    assert out["verdict_share"]["value"] == pytest.approx(0.5) and out["success_rate"] is None
    # success from the per-problem solved counts (4 samples each): the same interval as the explicit pairs
    solved = [{"completions": 400, "solved_per_problem": [n for n, _ in x]} for x in (first, final)]
    assert rate_changes(*solved)["success_rate"] == paired_change_ci(first, final)


def test_success_by_style_is_a_ratio_of_sums_with_an_interval() -> None:
    from train.evaluate import rate_ci, success_by_style

    ci = rate_ci([(1, 2), (0, 0), (3, 4)])
    assert ci["value"] == pytest.approx(4 / 6) and ci["n"] == 6 and ci["lo"] <= ci["value"] <= ci["hi"]
    assert rate_ci([(0, 0)]) is None
    by = success_by_style({"per_problem": {"success_verifying": [(2, 2)], "success_plain": [(0, 3)]}})
    assert by["success_verifying"]["value"] == 1.0 and by["success_plain"]["value"] == 0.0
    assert success_by_style({}) == {}
