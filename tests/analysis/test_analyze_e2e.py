"""`python -m analysis` end to end on a real micro training run: report, cache, kill + resume, a corrupt checkpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import ANALYSIS_PRESET, ROOT, analyze, micro_analysis, micro_overrides, run_train


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("analyze")
    proc = run_train(micro_overrides(tmp, "micro", "hf", steps=2, save_every=1))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "micro"


@pytest.mark.slow
def test_analyze_writes_report_then_reuses_cache(micro_run: Path) -> None:
    first = analyze(micro_run, engine="auto")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = micro_run / "analysis"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == [0, 1, 2] and summary["broken_steps"] == []
    assert all({"rollouts", "capture", "fixed", "fixed_steering"} <= set(c) for c in summary["computed"].values()), (
        summary["computed"],
        first.stdout[-3000:],
    )
    fixed = summary["fixed_text"]
    assert [h["step"] for h in fixed["per_step"]] == [0, 1, 2]
    assert {"in_base", "when", "follows", "content_or_position", "checked_at_value"} == set(fixed["answers"])
    patch = fixed["patching"]  # value patching: every step on the same pairs, the first step's change exactly 0
    assert patch["pairs"] > 0 and len(patch["change_from_first"]) == 3 and 0 < patch["layer"]
    assert patch["change_from_first"][0]["value"] == 0.0
    assert {"readable_at_base", "slip_p_not_rises", "truth_at_paren_rises", "final_direction_steers_base"} == set(
        fixed["questions"]
    )
    assert all(re.match(r"(Yes|No|Not measured)", q) for q in fixed["questions"].values()), fixed["questions"]
    for h in fixed["per_step"]:
        assert 0 <= h["slip_p_not"]["value"] <= 1  # the micro run's probes may have too few sites to fit
    assert fixed["per_step"][0]["slip_p_not_change"]["value"] == 0.0  # the base against itself
    assert {"rollouts", "capture", "fixed", "probes"} <= set(summary["stage_seconds"])
    assert all(v >= 0 for v in summary["stage_seconds"].values())
    assert fixed["roles"]["report"] > 0 and fixed["texts"]["counterfactual"] > 0
    for h in fixed["per_step"]:  # every headline number carries an interval, and the pair leak check holds
        for cat in ("right", "wrong", "slip", "misstated"):
            ci = h["accepts"][cat]
            assert ci["value"] is None or ci["lo"] <= ci["value"] <= ci["hi"]
        assert h["pair_max_diff"] < 1e-2
    assert summary["deviations_from_study"]  # the tiny preset is not the study's protocol, and says how
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64" in html
    opening = html.split("<h2>")[1]  # the report opens with one figure and one sentence per question
    assert opening.startswith("Four questions") and opening.count("data:image/png;base64") == 1
    assert opening.split("</ol>")[0].count("<li>") == 4, opening[:3000]
    assert "Fixed text: every checkpoint reads the same texts" in html and "Deviations from the original" in html
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", html)  # self-contained: nothing fetched when opened
    em = json.loads((out / "emergence.json").read_text())
    assert len(em["accuracy"]["paren/verdict"]) == 3 and len(em["eval"]) == 3
    layer = em["transfer_layer"]
    for i, row in enumerate(em["accuracy"]["paren/verdict"]):  # the transfer diagonal is each step's own probe
        if layer is not None and row[layer] is not None and em["transfer"][i][i] is not None:
            assert abs(em["transfer"][i][i] - row[layer]) < 1e-9
    steering = json.loads((out / "step_2" / "steering.json").read_text())
    if "sweep" in steering:  # every random draw at the run's one scale, the first draw along the rest of the curve
        draws = {r["scale"]: r["random_draws"] for r in steering["sweep"]}
        assert draws.pop(steering["chosen_scale"]) == 5 and set(draws.values()) == {1}, draws
        earlier = json.loads((out / "step_1" / "steering.json").read_text())  # not the last: the run's scale only
        assert [(r["scale"], r["random_draws"]) for r in earlier["sweep"]] == [(steering["chosen_scale"], 5)]
    rollouts = json.loads((out / "step_2" / "rollouts.json").read_text())
    assert len(rollouts) == 8 * 3 and {r["kind"] for r in rollouts} == {"greedy", "sampled"}
    assert all(isinstance(r["token_ids"], list) for r in rollouts)
    assert (out / "config.yaml").is_file()
    again = analyze(micro_run, engine="auto")
    assert again.returncode == 0
    assert all(c == [] for c in json.loads((out / "summary.json").read_text())["computed"].values())
    # a changed steering setting re-runs steering and what reads it (components), nothing upstream
    third = analyze(micro_run, "steering.scales=[0.0,20.0]", engine="auto")
    assert third.returncode == 0
    computed = json.loads((out / "summary.json").read_text())["computed"].values()
    assert all(c == ["fixed_steering", "steering", "components"] for c in computed), list(computed)
    check = [sys.executable, str(Path(__file__).parents[2] / "scripts" / "check_run.py"), str(micro_run), "--analysed"]
    checked = subprocess.run(check, capture_output=True, text=True)
    assert checked.returncode == 0 and "analysis and report" in checked.stdout, checked.stdout + checked.stderr


@pytest.mark.slow
def test_check_run_reads_what_the_run_wrote(micro_run: Path, tmp_path: Path) -> None:
    """scripts/check_run.py (the GPU check's content check) passes a real trained run, whose intermediate
    checkpoints kept the model only, and names what is wrong in a damaged copy."""
    script = [sys.executable, str(Path(__file__).parents[2] / "scripts" / "check_run.py")]
    ok = subprocess.run([*script, str(micro_run)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: "), ok.stdout + ok.stderr
    assert not list((micro_run / "step_1").glob("optimizer.pt")) and (micro_run / "step_2" / "optimizer.pt").is_file()
    copy = tmp_path / "micro"
    shutil.copytree(micro_run, copy, ignore=shutil.ignore_patterns("analysis"))
    rows = (copy / "eval.jsonl").read_text().splitlines()
    (copy / "eval.jsonl").write_text("\n".join(rows[:-1]) + "\n")  # the last checkpoint's evaluation lost
    (copy / "step_1" / "optimizer.pt").write_bytes(b"")  # resume state where resume_state: last keeps none
    bad = subprocess.run([*script, str(copy)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "no evaluation of step 2" in bad.stdout and "step 1: keeps resume state ['optimizer.pt']" in bad.stdout
    # the micro run's groups all score 0 (a 30-step base), so no step has a gradient and its weights rightly stay put;
    # a run that logged a gradient and still saved step 0's weights lost its updates
    rows = [json.loads(x) for x in (micro_run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] == 0 for r in rows if "loss" in r)
    same = tmp_path / "unchanged"
    shutil.copytree(micro_run, same, ignore=shutil.ignore_patterns("analysis"))
    shutil.copy(same / "step_0" / "model.safetensors", same / "step_2" / "model.safetensors")
    assert subprocess.run([*script, str(same)], capture_output=True, text=True).returncode == 0
    (same / "metrics.jsonl").write_text("".join(json.dumps({**r, "grad_norm": 0.5}) + "\n" for r in rows))
    stale = subprocess.run([*script, str(same)], capture_output=True, text=True)
    assert stale.returncode == 1 and "step 2: the same weights as step 0 although a gradient" in stale.stdout


@pytest.mark.slow
def test_analyze_killed_midway_resumes_without_loss(micro_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(micro_run, run, ignore=shutil.ignore_patterns("analysis"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis", "--preset", ANALYSIS_PRESET, *micro_analysis(run, "hf")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    keys = run / "analysis" / "step_1" / "keys.json"
    deadline = time.monotonic() + 600
    # killed once the fixed-text stage is done at step 1 (it runs before the per-step stages and needs only the first
    # and last checkpoints' rollouts): step 1's own rollouts are still to come
    while time.monotonic() < deadline and not (keys.is_file() and '"fixed"' in keys.read_text()):
        assert proc.poll() is None, "analysis ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "analysis" / "summary.json").exists()
    done = analyze(run)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    computed = json.loads((run / "analysis" / "summary.json").read_text())["computed"]
    assert "rollouts" not in computed["0"] and "rollouts" not in computed["2"]  # nothing done before the kill redone
    assert "fixed" not in computed["1"] and "rollouts" in computed["1"]


@pytest.mark.slow
def test_corrupt_checkpoint_is_named_and_skipped(micro_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "broken"
    shutil.copytree(micro_run, run, ignore=shutil.ignore_patterns("analysis"))
    weights = run / "step_1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (run / "step_2" / "tokenizer.json").unlink()
    proc = analyze(run)
    assert proc.returncode == 1
    assert "step_1/model.safetensors" in proc.stdout + proc.stderr
    assert "step_2/tokenizer.json: missing" in proc.stdout + proc.stderr
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["steps"] == [0] and summary["broken_steps"] == [1, 2]
    html = (run / "analysis" / "report.html").read_text()
    assert html.count("NOT analysed") == 2


@pytest.mark.slow
def test_bad_input_is_one_line_naming_the_field(micro_run: Path) -> None:
    for extra, field in (
        (["steering.layers=[9]"], "steering.layers / steering.direction_layer: layers [9] do not exist"),
        (["probe.calibration_fraction=0"], "probe.calibration_fraction: 0 leaves the calibration split empty"),
    ):
        proc = analyze(micro_run, *extra)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("config error: ") and field in lines[0], proc.stderr[-2000:]
    # an absolute scale far below the residual norm looks relative: found once the norm is measured (after the
    # rollouts, whose logs precede it), still one error line naming the field and no traceback
    proc = analyze(micro_run, "steering.scale=0.001")
    errors = [x for x in proc.stderr.splitlines() if x.startswith("config error: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("config error: steering.scale: 0.001"), proc.stderr[-2000:]
    assert "steering.scale_unit=relative" in errors[0]


def _check_report_script():  # noqa: ANN202
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_report", ROOT / "scripts" / "check_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_report_draws_every_figure_in_a_browser(micro_run: Path, tmp_path: Path) -> None:
    """The report opened in headless Chromium: every figure decodes and no section is empty; a broken figure and an
    empty section are caught (the check can fail)."""
    if _check_report_script().chromium() is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium; .ci/run installs it where it can)")
    report = micro_run / "analysis" / "report.html"
    if not report.is_file():
        assert analyze(micro_run).returncode == 0
    shot = tmp_path / "shot.png"
    cmd = [sys.executable, str(ROOT / "scripts" / "check_report.py")]
    proc = subprocess.run([*cmd, str(report), "--screenshot", str(shot)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    drawn, total = map(int, re.search(r"(\d+)/(\d+) figures drawn", proc.stdout).groups())
    assert drawn == total >= 8, proc.stdout
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!doctype html><html><body><h2>Figure</h2><img src='data:image/png;base64,iVBORw0KGgoAAAA'>"
        "<h2>Empty</h2><p> </p><h2>Text</h2><p>numbers</p></body></html>"
    )
    proc = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "0/1 figures drawn" in proc.stdout and "['Empty']" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_make_analyze_runs_every_stage_with_the_model_on_another_device(
    micro_run: Path, tmp_path: Path, fake_cuda: None
) -> None:
    from analysis.analyse_run import analyse_run
    from analysis.config import load_analysis_config

    run = tmp_path / "micro"
    shutil.copytree(micro_run, run, ignore=shutil.ignore_patterns("analysis"))
    overrides = [*micro_analysis(run, "hf"), "device=cuda", "precision=fp32", "steps=[0,2]"]
    summary = analyse_run(load_analysis_config(ANALYSIS_PRESET, overrides), say=lambda _: None)
    assert summary["steps"] == [0, 2] and summary["broken_steps"] == []
    stages = {"rollouts", "capture", "probes", "unembed", "steering", "components", "fixed", "fixed_patching"}
    assert all(stages <= set(c) for c in summary["computed"].values()), summary["computed"]
    assert json.loads((run / "analysis" / "fixed.json").read_text())["steps"] == [0, 2]
    assert (run / "analysis" / "report.html").stat().st_size > 10_000
