"""One run end to end (``make analyze``): the run-level steps of analysis/run_steps.py (the fixed-text protocol,
every checkpoint's stages, emergence, summary, report) and what each computes.

A checkpoint that cannot be loaded is reported with the file that is wrong and skipped; the others are still
analysed and the report marks the broken one. The resolved config is written to ``<run>/analysis/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from analysis.cache import StepCache
from analysis.checkpoint_stages import CheckpointError, check_checkpoint, run_roles
from analysis.config import AnalysisConfig
from analysis.context import RunContext
from analysis.run_steps import RunState
from analysis.stages import analyse_checkpoint
from tasks.config import ConfigError, dump_config, load_config
from tasks.countdown.counterfactual import LineStyle
from train.precision import resolve


def find_run(cfg: AnalysisConfig) -> Path:
    """The configured run directory, or the most recently modified run (one with step_<N> checkpoints)."""
    from train.checkpoints import list_checkpoints

    if cfg.run is not None:
        run = Path(cfg.run)
        if not run.is_dir() and (Path(cfg.output_root) / cfg.run).is_dir():
            run = Path(cfg.output_root) / cfg.run
        if not list_checkpoints(run):
            raise ConfigError(f"run: {str(run)!r} has no step_<N> checkpoints (train one with `make train`)")
        return run
    root = Path(cfg.output_root)
    runs = [p for p in root.iterdir() if p.is_dir() and list_checkpoints(p)] if root.is_dir() else []
    if not runs:
        raise ConfigError(f"output_root: no run with checkpoints under {str(root)!r}; run `make train` first")
    return max(runs, key=lambda p: max(c.stat().st_mtime for _, c in list_checkpoints(p)))


def _num_layers(path: Path | None) -> int | None:
    import json

    try:
        return int(json.loads((path / "config.json").read_text())["num_hidden_layers"]) if path else None
    except (OSError, ValueError, KeyError):
        return None  # a broken checkpoint is reported by its own stage


def run_inputs(run: Path, cfg: AnalysisConfig | None = None) -> tuple[Any, str, LineStyle]:
    """The analysed problems, prompt template and line style of a run, from its resolved training config: the
    held-out split's first problems, then (``report_split: fresh``) a fresh report draw outside the train and test
    splits, so that the last ``report_count`` problems are the ones :func:`analysis.splits.fresh_roles` marks
    ``report``; the style is its data's operators and whether its base corpus chained its lines."""
    from analysis.splits import report_count
    from tasks.countdown.dataset import draw_report_problems, load_problems, prepare
    from train.config import TrainConfig

    path = run / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: missing; the analysis reads the run's data split and template from it")
    tcfg = load_config(TrainConfig, path)
    search = tcfg.base.search if tcfg.model == "tiny" else None
    style = LineStyle(tuple(tcfg.data.operators), bool(search and search.chain))
    out_dir, _ = prepare(tcfg.data, progress=False)
    dev = load_problems(out_dir, "test")
    if cfg is None or cfg.report_split == "dev":
        return dev, tcfg.template, style
    n = cfg.rollout.problems
    n_rep = report_count(n, cfg.probe.test_fraction)
    if len(dev) < n - n_rep:
        raise ConfigError(
            f"rollout.problems: {n} analysed problems need {n - n_rep} development problems, but the run's test "
            f"split has {len(dev)}; lower rollout.problems"
        )
    seen = load_problems(out_dir, "train") + dev
    fresh = draw_report_problems(tcfg.data, n_rep, cfg.report_seed, seen)
    return dev[: n - n_rep] + fresh, tcfg.template, style


def analyse_run(cfg: AnalysisConfig, say: Any = print) -> dict[str, Any]:
    """Analyse every (selected) checkpoint of the run, then write fixed.json (the fixed-text stage's results),
    emergence.json, summary.json and report.html: the steps of :data:`analysis.run_steps.RUN`, in order."""
    from analysis.run_steps import walk_run

    return walk_run(prepare_run(cfg, say))["summary"]


def prepare_run(cfg: AnalysisConfig, say: Any = print) -> RunState:
    """The run, its resolved config (written to ``<run>/analysis/config.yaml``), its selected checkpoints with the
    broken ones named, and the context every stage reads; refuses bad steps or layers before anything runs."""
    from analysis.rollouts import choose_engine
    from train.checkpoints import list_checkpoints

    t0 = time.time()
    cfg = dataclasses.replace(cfg, precision=resolve(cfg.precision, cfg.device, "precision"))
    run = find_run(cfg)
    out = run / "analysis"
    out.mkdir(exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    ckpts = [(s, p) for s, p in list_checkpoints(run) if not cfg.steps or s in cfg.steps]
    missing = sorted(set(cfg.steps) - {s for s, _ in ckpts})
    if missing:
        raise ConfigError(
            f"steps: {missing} are not checkpoints of {run} (it has {[s for s, _ in list_checkpoints(run)]})"
        )
    layers = _num_layers(ckpts[-1][1] if ckpts else None)
    if layers is not None:
        cfg.check_layers(layers)  # before any rollout starts
    if not cfg.fixed.enabled and cfg.steering.scale is None:
        raise ConfigError("steering.scale: set one scale for the run, or keep fixed.enabled (it calibrates one)")
    problems, template, style = run_inputs(run, cfg)
    chosen: list[str] = []

    def engine() -> str:
        if not chosen:
            chosen.append(choose_engine(cfg.rollout.engine))
        return chosen[0]

    ctx = RunContext(cfg, out, problems, template, run_roles(cfg), style, engine, say)
    broken: dict[int, str] = {}
    for step, path in ckpts:
        try:
            check_checkpoint(path)
        except CheckpointError as e:
            say(f"step {step}: skipped: {e}")
            broken[step] = str(e)
    return RunState(run, ctx, ckpts, broken, layers, t0)


def fixed_text_step(rs: RunState) -> dict[str, Any] | None:
    """The fixed-text protocol over the loadable checkpoints (None when the preset turns it off)."""
    if not (rs.ctx.cfg.fixed.enabled and rs.loadable):
        return None
    from analysis.fixed_text.per_run import run_fixed

    return run_fixed(rs.ctx, rs.loadable)


def checkpoints_step(rs: RunState) -> list[dict[str, Any]]:
    """Every checkpoint's own stages (analysis/stages.py ``CHECKPOINT``), steered at the run's one scale; a broken
    checkpoint's row is its error."""
    from tqdm.auto import tqdm

    fixed = rs.values["fixed_text"]
    scale = fixed["scale"]["scale"] if fixed is not None else rs.ctx.cfg.steering.scale
    results: list[dict[str, Any]] = []
    bar = tqdm(rs.ckpts, desc=f"analyze {rs.run.name}", unit="ckpt")
    for step, path in bar:
        bar.set_postfix(step=step)
        if step in rs.broken:
            results.append({"step": step, "error": rs.broken[step]})
            continue
        try:
            last = step == rs.loadable[-1][0]
            results.append(analyse_checkpoint(rs.ctx, step, path, scale, last=last, say=bar.write))
        except CheckpointError as e:
            bar.write(f"step {step}: skipped: {e}")
            results.append({"step": step, "error": str(e)})
    return results


def emergence_step(rs: RunState) -> dict[str, Any]:
    """Every metric across the analysed checkpoints (analysis/emergence.py)."""
    from analysis.emergence import emergence

    cfg = rs.ctx.cfg
    return emergence(rs.run, rs.values["checkpoints"], cfg.report.reach, cfg.probe.source)


def summary_step(rs: RunState) -> dict[str, Any]:
    """The headline numbers, the deviations from the original study, and each stage's seconds (said too)."""
    fixed, out = rs.values["fixed_text"], rs.ctx.out
    em, results = rs.values["emergence"], rs.values["checkpoints"]
    summary = summarize(rs.run, results, em, time.time() - rs.started, fixed and fixed["headline_layer"])
    summary["deviations_from_study"] = _deviations(rs.ctx.cfg, rs.run, rs.loadable, rs.layers)
    if fixed is not None:
        from analysis.fixed_text.summary import fixed_headline

        summary["fixed_text"] = fixed_headline(fixed)
    caches = [rs.ctx.cache(s) for s, _ in rs.loadable] + [StepCache(out / "fixed")]
    summary["stage_seconds"] = stage_seconds(caches)
    rs.ctx.say(
        f"analysis: {summary['seconds']:.0f} s this run; last computation of each stage (s, all checkpoints): "
        + ", ".join(f"{k} {v:.0f}" for k, v in summary["stage_seconds"].items())
    )
    return summary


def report_step(rs: RunState) -> str:
    """report.html (analysis/report.py) from every earlier step."""
    from analysis.report import render

    v = rs.values
    return render(rs.run, v["emergence"], v["checkpoints"], v["summary"], v["fixed_text"])


def _deviations(cfg: AnalysisConfig, run: Path, ckpts: list, layers: int | None) -> list[str]:
    """protocol.deviations with what only the run knows: its base model's name, tokenizer and task."""
    from transformers import AutoTokenizer

    from analysis.original_study import deviations
    from train.config import TrainConfig

    tcfg = load_config(TrainConfig, run / "config.yaml")
    tok = AutoTokenizer.from_pretrained(ckpts[-1][1]) if ckpts else None
    return deviations(cfg, layers, str(tcfg.model), tok, num_operands=tuple(tcfg.data.num_operands))


def stage_seconds(caches: list[StepCache]) -> dict[str, float]:
    """Wall seconds of each stage's last computation, summed over checkpoints, slowest first."""
    total: dict[str, float] = {}
    for c in caches:
        for stage, sec in c.seconds().items():
            total[stage] = round(total.get(stage, 0.0) + sec, 1)
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def summarize(
    run: Path, results: list[dict[str, Any]], em: dict[str, Any], seconds: float, layer: int | None = None
) -> dict[str, Any]:
    """The headline numbers: the final step's own-rollout verdict probe at ``layer`` (the fixed-text stage's
    headline layer, or the deepest) vs its control, steering at the chosen scale."""
    ok = [r for r in results if "error" not in r]
    out: dict[str, Any] = {
        "run": str(run),
        "steps": em["steps"],
        "broken_steps": [b["step"] for b in em["broken"]],
        "seconds": round(seconds, 1),
        "computed": {r["step"]: r["computed"] for r in ok},
        "report": str(run / "analysis" / "report.html"),
    }
    if not ok:
        return out
    last = ok[-1]
    if layer is None:
        layer = max((r["layer"] for r in last["probes"]), default=0)
    fit = [r for r in last["probes"] if r["fit"] and r["kind"] == "paren" and r["label"] == "verdict"]
    at = [r for r in fit if r["layer"] == layer]
    if at:  # the headline layer (chosen on calibration problems), never the best layer on the reported data
        row = at[0]
        out["final_verdict_probe"] = {
            k: row[k] for k in ("layer", "accuracy", "auroc", "majority", "shuffled", "disagree_accuracy")
        }
        out["final_verdict_probe"]["margin_over_shuffled"] = row["accuracy"] - row["shuffled"]
    s = last["steering"]
    if "at_chosen" in s and s["at_chosen"]:
        out["final_steering"] = {
            "scale": s["chosen_scale"],
            "layers": s["layers"],
            "flip_direction": s["at_chosen"]["flip_direction"],
            "flip_random": s["at_chosen"]["flip_random"],
            "flip_direction_ci": s["at_chosen"].get("flip_direction_ci"),
            "flip_random_ci": s["at_chosen"].get("flip_random_ci"),
            "flip_negative_on_right": s["at_chosen"]["flip_negative_on_right"],
            "n_wrong": s["at_chosen"]["n_wrong"],
            "free": s["free"],
        }
    ce = em.get("components")
    if ce:
        k3 = next((r for r in ce["ablation"][-1]["by_k"] if r["k"] == 3), None)
        out["final_components"] = {
            "top": ce["final_top"],
            "first_in_top": ce["first_in_top"],
            "top3_change": k3 and k3["top_change"],
            "random3_change": k3 and k3["random_change_mean"],
            "ratio": k3 and (k3["top_change"] / k3["random_change_mean"] if k3["random_change_mean"] else None),
            "patching": ce["ablation"][-1]["patching"],
            "finding": ce.get("finding"),
        }
    out["earliest_layer_paren_verdict"] = dict(
        zip(em["steps"], em["earliest_layer"].get("paren/verdict", []), strict=False)
    )
    return out
