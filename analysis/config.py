"""The analysis stage's config: one frozen dataclass (with sections) loaded from ``configs/analysis/<preset>.yaml``.

Each section feeds one stage, and each stage's cache key is the hash of *its* section plus the checkpoint it
reads, so changing, say, the steering scales re-runs steering and the report but not rollouts, capture or
probes. Layer numbers everywhere use the residual-stream convention: 0 is the embedding output, ``l >= 1`` is
the output of decoder layer ``l`` (1-based), before the final norm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tasks.config import ConfigError, find_preset, load_config

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "analysis"
# a relative steering scale above this many residual norms is almost surely an absolute one given by mistake
RELATIVE_MAX = 4.0


@dataclass(frozen=True)
class RolloutSettings:
    """Generations on a fixed held-out problem set, per checkpoint."""

    problems: int = 200  # the first N problems of the run's held-out split
    samples: int = 2  # sampled completions per problem (besides the greedy one)
    temperature: float = 1.0
    max_new_tokens: int = 256
    engine: Literal["auto", "vllm", "hf"] = "auto"
    seed: int = 0
    # vLLM's share of the GPU's memory for rollouts on CUDA (its gpu_memory_utilization). None: vLLM's default (0.9)
    # on GPU and train/rollout_engine.py's CPU setting on CPU. Lower it when the GPU is shared with another job.
    gpu_memory_share: float | None = None


@dataclass(frozen=True)
class CaptureSettings:
    """Teacher-forced residual capture at "(", the last "=" before it, and the stated value's first token."""

    batch_size: int = 32
    dtype: Literal["float32", "float16"] = "float16"  # storage dtype of the captured activations
    # a batch is also cut at this many bytes of float32 activations (sites x 3 x (layers + 1) x d_model x 4), so a
    # capture's peak host memory does not depend on how many attempt lines its longest completions have. None: no cap
    max_batch_bytes: int | None = None


@dataclass(frozen=True)
class ProbeSettings:
    """Per-layer linear probes: standardised logistic regression (scikit-learn), or the original study's softmax."""

    source: Literal["greedy", "sampled", "all"] = "all"  # which rollouts train and test the probes
    # Problem roles (analysis/splits.py): calibration problems choose the steering scale, train problems fit the
    # probes, report ("test") problems give every reported number; no problem has two roles.
    test_fraction: float = 0.3  # share of problems whose sites are reported
    calibration_fraction: float = 0.2  # share of problems only used to choose the steering scale
    # logistic: scikit-learn on standardised activations, weights mapped back to raw units (own-rollout and
    # fixed-text stages). softmax: a two-class softmax on raw activations with AdamW, zero init, bias, fixed epochs
    # (analysis/softmax_probe.py). released: the released probe.py's recipe (randn/sqrt(d) init, no bias, AdamW lr
    # 1e-4, betas (0.9, 0.99), wd 0.01, early stopping with patience 10 on a held-out loss: fit_released_probes'
    # defaults, which are the released values). softmax/released: fixed-text stage only (own-rollout: logistic).
    method: Literal["logistic", "softmax", "released"] = "logistic"
    # Probe texts only from completions holding both a "(not" and a "(this" verdict site, as the released probe.py
    # kept only such completions (fixed-text rollout subsets and own-rollout probes); false: every completion.
    require_both_verdicts: bool = False
    # method released only: early stopping on a validation loss averaged over layers (val_fraction of the fit's
    # sites held out, patience epochs without a new minimum, at most max_epochs), as probe.py did; accumulate_grad:
    # probe.py zeroed the gradients once, before its loop, so every step applied the sum of all gradients so far
    val_fraction: float = 0.1
    patience: int = 10
    max_epochs: int = 500
    accumulate_grad: bool = False
    C: float = 1.0
    max_iter: int = 2000
    # Logistic probes' solver: "sklearn" (L-BFGS, one probe at a time on the CPU; the reference, and the tiny
    # preset's, whose results it keeps bit for bit) or "torch" (Newton's method on every layer x label x real/shuffled
    # target of a chunk at once, float64 on `device`: analysis/probes_torch.py; same objective, agrees to the
    # solvers' tolerance). The hub presets use torch: 333 probes x 2 fits per checkpoint at d_model 2048.
    solver: Literal["sklearn", "torch"] = "sklearn"
    min_per_class: int = 5  # below this many examples of a class a probe is reported as not fit
    seed: int = 0


@dataclass(frozen=True)
class SteeringSettings:
    """Token-conditional steering with the verdict probe's class-1 direction."""

    layers: tuple[int, ...] = (2, 3)  # residual layers to add to (decoder-layer outputs, 1-based)
    direction_layer: int | None = None  # probe layer whose direction is used; None: each layer its own probe
    # relative: a scale is a multiple of the mean residual-stream norm at the steered layer (at "(" sites of the
    # fixed texts, per checkpoint), so a preset's value reads the same for the tiny model and a 3B one; absolute:
    # the unit direction times the scale as given (the original study's "normalized x 20").
    scale_unit: Literal["relative", "absolute"] = "relative"
    scales: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # the sweep, in scale_unit
    # One scale for every checkpoint. None: the smallest swept scale whose direction flips >= flip_target of the
    # *calibration* problems' wrong lines at the last checkpoint (fixed text); those problems are never reported.
    scale: float | None = None
    flip_target: float = 0.5
    # Which fixed-text direction is steered (and unembedded as "the" direction): own = a probe of the checkpoint's own
    # output verdict (its margin's sign) at "(", on every fixed text; verdict = a probe of the written verdict on the
    # rollout texts (the original study's W[1]).
    direction: Literal["own", "verdict"] = "own"
    # Where the flip test adds the vector: "before_paren" = the position that predicts " (" (after the stated value;
    # the original study's), "paren" = the "(" itself (then only the verdict word can change). Both are reported;
    # this one is the headline.
    position: Literal["before_paren", "paren"] = "before_paren"
    every: int = 3  # k of the rule below (analysis/steering/rules.py states each rule)
    # every_kth: the k-th, 2k-th, ... attempt-line "(" (with before_paren: the post's "every 3rd '('"); from_kth:
    # every token from the k-th attempt-line "(" on (this project's cumulative rule); released: the released
    # intervene.py, every step from the one predicting the k-th generated " (" on, last position only (needs
    # position before_paren)
    mode: Literal["every_kth", "from_kth", "released"] = "every_kth"
    problems: int = 100  # problems for free steered generation
    # Where the slow part runs (the same field in components:): the own-rollout flip test over every swept scale on
    # the last analysed checkpoint only ("last"; the others run the run's one scale, all the step curve reads) or on
    # every checkpoint ("every").
    slow_parts: Literal["last", "every"] = "last"
    max_flip_cases: int = 200  # wrong-rejected (and right-accepted) attempts used for the flip test
    flip_new_tokens: int = 8  # tokens generated after the steered position (acceptance in any form is a flip)
    max_new_tokens: int = 256
    random_seed: int = 0
    random_draws: int = 5  # random directions of the same norm per scale (>= 5; mean, max and CI reported)
    batch_size: int = 64
    # free generation runs every condition (unsteered, W, each random draw) in one batched pass; on 2 CPU cores 256
    # rows per batch took ~1.6x less time than 64 for the tiny model (lower it for a large model's KV cache)
    free_batch_size: int = 256


@dataclass(frozen=True)
class FixedTextSettings:
    """One text set teacher-forced through every checkpoint (analysis/fixed_text/): probes on identical inputs."""

    enabled: bool = True
    rollouts: int = 200  # completions with verdict sites taken from each of the first and last checkpoints
    # which of those completions: all, or greedy / sampled only (the released probe.py read greedy completions)
    source: Literal["all", "greedy", "sampled"] = "all"
    # problems written as counterfactual lines (4 categories at every position 0..max_prior, plus one pair per
    # category for the leak check: 28 texts each at max_prior 5); None: every analysed problem
    counterfactual_problems: int | None = None
    # up to this many rejected lines before the tested one: positions 0..max_prior, so a verdict that counts lines
    # (the tiny model accepts mostly late in a completion) shows up against one that reads the line
    max_prior: int = 5
    seed: int = 0
    batch_size: int = 32
    bootstrap: int = 200  # bootstrap replicates (resampling problems) behind every confidence interval
    steer_cases: int = 100  # counterfactual wrong lines per role for the flip test with the final direction
    # shuffled-label probes of the headline "(" verdict probe, each on an independent permutation (the other probes
    # keep one): one permutation is one random direction, whose AUROC can sit far from 0.5 at every step with a
    # tight interval (the interval hides the permutation's own spread); the range over several shows what chance
    # looks like on these activations
    shuffles: int = 5


@dataclass(frozen=True)
class ComponentSettings:
    """Which heads / MLP blocks write the verdict direction (attribution, ablation, patching, controls)."""

    enabled: bool = True
    mode: Literal["mean", "zero"] = "mean"  # ablation: substitute the dataset mean, or zero
    max_sequences: int = 100  # greedy rollouts used (teacher-forced; each has 1+ "(" sites)
    k_max: int = 5  # ablate the top-1..k_max heads
    random_draws: int = 3  # random head sets per k
    mlp_top: int = 2
    # Where the slow part runs (the same field in steering:): free generation with ablated heads, the token-vector
    # and prompting controls and the whole random-head curve on the last analysed checkpoint only ("last") or on
    # every one ("every").
    slow_parts: Literal["last", "every"] = "last"
    free_problems: int = 50  # problems for free generation with top-3 / random-3 heads ablated
    free_max_new_tokens: int = 192
    batch_size: int = 16  # sequences per teacher-forced pass (16 was fastest on 2 CPU cores)
    control_tokens: tuple[str, ...] = ("this", "works")
    neighbours: int = 5  # top unembedding neighbours of W added to the token span
    prompt_words: tuple[str, ...] = ("this works", "exactly")
    seed: int = 0


@dataclass(frozen=True)
class ReportSettings:
    """What the report shows."""

    top_k_tokens: int = 10  # tokens listed per unembedded direction
    unembed_gain: bool = True  # include the final norm's gain (the study unembedded lm_head @ W without it)
    text_samples: int = 6  # original vs steered completions shown side by side
    reach: float = 0.95  # "earliest layer that reaches" this probe accuracy


@dataclass(frozen=True)
class AnalysisConfig:
    """Everything ``make analyze`` does to a run's checkpoints."""

    run: str | None = None  # run directory; None: the most recently modified run under output_root
    output_root: str = "checkpoints"
    steps: tuple[int, ...] = ()  # checkpoint steps to analyse; empty: all
    device: str = "cpu"
    # auto: bf16 where the device computes it natively, float32 elsewhere (train/precision.py). Inference keeps the
    # checkpoint's dtype under bf16 (float32 for the tiny preset) and loads it in float32 under fp32
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # Where report problems come from. fresh: drawn with report_seed from the task's distribution, outside the run's
    # train and test splits, so no choice of seed, base or setting has seen them (the test split's problems, where
    # those were chosen, become the development split: calibration and probe training). dev: the test split's own.
    report_split: Literal["fresh", "dev"] = "fresh"
    report_seed: int = 20261206  # a seed no tuning has used; changing it draws a different report split
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    steering: SteeringSettings = field(default_factory=SteeringSettings)
    fixed: FixedTextSettings = field(default_factory=FixedTextSettings)
    components: ComponentSettings = field(default_factory=ComponentSettings)
    report: ReportSettings = field(default_factory=ReportSettings)

    def __post_init__(self) -> None:
        r, p, s = self.rollout, self.probe, self.steering
        if r.problems < 1 or r.samples < 0:
            raise ConfigError(f"rollout.problems >= 1 and rollout.samples >= 0 expected, got {r.problems}, {r.samples}")
        if r.samples and r.temperature <= 0.0:
            raise ConfigError(
                f"rollout.temperature: expected > 0 for the {r.samples} sampled completions per problem (the greedy "
                f"one is always taken; vLLM refuses n > 1 at temperature 0), got {r.temperature}"
            )
        if r.gpu_memory_share is not None and not 0.05 <= r.gpu_memory_share <= 0.95:
            raise ConfigError(f"rollout.gpu_memory_share: expected a share in [0.05, 0.95], got {r.gpu_memory_share}")
        if r.max_new_tokens < 16:
            raise ConfigError(f"rollout.max_new_tokens: expected >= 16, got {r.max_new_tokens}")
        if not 0.05 <= p.test_fraction <= 0.95:
            raise ConfigError(f"probe.test_fraction: expected a share in [0.05, 0.95], got {p.test_fraction}")
        if not 0 <= p.calibration_fraction <= 0.5 or p.calibration_fraction + p.test_fraction >= 0.95:
            raise ConfigError(
                f"probe.calibration_fraction: expected a share in [0, 0.5] leaving training problems beside "
                f"probe.test_fraction ({p.test_fraction}), got {p.calibration_fraction}"
            )
        if self.fixed.enabled and s.scale is None and p.calibration_fraction == 0:
            raise ConfigError(
                "probe.calibration_fraction: 0 leaves the calibration split empty, and steering.scale: null is "
                "calibrated on it; set a share > 0 (e.g. 0.2) or a fixed steering.scale"
            )
        if s.random_draws < 5:
            raise ConfigError(f"steering.random_draws: expected >= 5 random directions, got {s.random_draws}")
        if (self.fixed.counterfactual_problems or 0) > r.problems:
            raise ConfigError(
                f"fixed.counterfactual_problems ({self.fixed.counterfactual_problems}) exceeds rollout.problems "
                f"({r.problems}): counterfactual lines are written for the analysed problems only"
            )
        if self.fixed.bootstrap < 50:
            raise ConfigError(f"fixed.bootstrap: expected >= 50 replicates, got {self.fixed.bootstrap}")
        if not s.layers or any(layer < 0 for layer in s.layers):
            raise ConfigError(f"steering.layers: expected residual layer numbers >= 0, got {list(s.layers)}")
        if s.every < 1:
            raise ConfigError(f"steering.every: expected >= 1, got {s.every}")
        if s.mode == "released" and s.position != "before_paren":
            raise ConfigError(f"steering.position: mode released needs before_paren, got {s.position}")
        if not s.scales or any(x < 0 for x in s.scales):
            raise ConfigError(f"steering.scales: expected non-negative scales, got {list(s.scales)}")
        if s.scale_unit == "relative":
            for name, values in (("steering.scales", s.scales), ("steering.scale", (s.scale or 0.0,))):
                if max(values) > RELATIVE_MAX:
                    raise ConfigError(
                        f"{name}: {max(values):g} is {max(values):g}x the residual norm at the steered layer; "
                        f"steering.scale_unit is relative (fractions of that norm, at most {RELATIVE_MAX:g}): give "
                        "a fraction such as 0.5, or set steering.scale_unit=absolute for a scale in raw units"
                    )
        if s.problems > r.problems:
            raise ConfigError(f"steering.problems ({s.problems}) exceeds rollout.problems ({r.problems})")
        if not 0 < s.flip_target <= 1:
            raise ConfigError(f"steering.flip_target: expected a share in (0, 1], got {s.flip_target}")

    def check_layers(self, num_layers: int) -> None:
        """Fail early, naming the field, when a configured layer does not exist in a model with ``num_layers``."""
        bad = [x for x in self.steering.layers if x > num_layers]
        if self.steering.direction_layer is not None and not 0 <= self.steering.direction_layer <= num_layers:
            bad.append(self.steering.direction_layer)
        if bad:
            raise ConfigError(
                f"steering.layers / steering.direction_layer: layers {bad} do not exist; this model has residual "
                f"layers 0..{num_layers} (0 = embeddings, l = output of decoder layer l)"
            )


def preset_path(preset: str) -> Path:
    """``configs/analysis/<preset>.yaml`` for a preset name, or the path itself when given a file."""
    return find_preset(preset, PRESET_DIR, "analysis preset")


def load_analysis_config(preset: str = "tiny", overrides: tuple[str, ...] | list[str] = ()) -> AnalysisConfig:
    """The resolved analysis config for a preset name (or YAML path) plus ``key=value`` overrides."""
    return load_config(AnalysisConfig, preset_path(preset), overrides)
