"""Every PyTorch hook the analysis installs, as context managers that always remove them.

Why by hand: TransformerLens does not load arbitrary HF Qwen2 checkpoints of any size without conversion, and
``output_hidden_states`` returns the *normed* last layer and every position (gigabytes for a 3B model over a
rollout set). Two primitives cover capture and steering for any decoder-only HF model with ``model.model.layers``:

* :func:`record_residuals` keeps the residual stream at chosen ``(row, position)`` pairs only, after the
  embeddings and after every decoder layer, in one forward pass;
* :func:`add_to_residual` adds ``mask[b, t] * vector`` to the output of chosen layers, where ``mask`` is read
  from a mutable holder at call time (so a KV-cached generation loop can change it every step).

Layer numbers use the residual convention: 0 = embedding output, ``l >= 1`` = output of decoder layer ``l``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The decoder blocks of an HF causal LM (``model.model.layers``), with a clear error otherwise."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError(
            f"{type(model).__name__}: expected an HF decoder-only causal LM with model.model.layers "
            "(Qwen2, Llama, Mistral style)"
        )
    return list(layers)


def residual_module(model: Any, layer: int) -> torch.nn.Module:
    """The module whose output is residual layer ``layer`` (0: the token embedding)."""
    layers = decoder_layers(model)
    if not 0 <= layer <= len(layers):
        raise ValueError(f"layer {layer} does not exist: residual layers are 0..{len(layers)}")
    return model.model.embed_tokens if layer == 0 else layers[layer - 1]


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def hooked(
    handles_from: Sequence[tuple[torch.nn.Module, Any]], pre: Sequence[tuple[torch.nn.Module, Any]] = ()
) -> Iterator[None]:
    """Register ``(module, forward_hook)`` pairs and ``pre`` ``(module, forward_pre_hook)`` pairs; remove every
    one on exit, also when the body raises."""
    handles = []
    try:
        for module, hook in pre:
            handles.append(module.register_forward_pre_hook(hook))
        for module, hook in handles_from:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record_residuals(model: Any, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[dict[int, torch.Tensor]]:
    """Record the residual stream at positions ``(rows[i], cols[i])`` for every layer 0..L.

    Yields a dict ``layer -> (len(rows), d_model)`` tensor that is filled in by the forward pass run in the body.
    """
    out: dict[int, torch.Tensor] = {}

    def make(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            out[layer] = _hidden(output)[rows, cols].detach()

        return hook

    n = len(decoder_layers(model))
    with hooked([(residual_module(model, layer), make(layer)) for layer in range(n + 1)]):
        yield out


@contextmanager
def record_residual_norms(model: Any, layers: Sequence[int]) -> Iterator[dict[int, list[float]]]:
    """Record the mean L2 norm of residual layer ``layer`` (over batch and positions) for each of ``layers``.

    Yields a dict ``layer -> [norm, ...]`` that gains one entry per forward pass run in the body.
    """
    norms: dict[int, list[float]] = {layer: [] for layer in layers}

    def make(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            norms[layer].append(float(_hidden(output).float().norm(dim=-1).mean()))

        return hook

    with hooked([(residual_module(model, layer), make(layer)) for layer in layers]):
        yield norms


class MaskHolder:
    """A mutable (batch, seq) mask that steering hooks read at call time; ``None`` means add nothing. ``rows``,
    when set, says which rows of per-row vectors the current batch holds (a generation loop that drops finished
    rows)."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None


@contextmanager
def add_to_residual(model: Any, vectors: dict[int, torch.Tensor], holder: MaskHolder) -> Iterator[MaskHolder]:
    """Add ``holder.mask[b, t] * vectors[layer]`` to residual layer ``layer`` for each configured layer.

    The mask is whatever ``holder.mask`` is when the layer runs, shape (batch, seq) matching the current input
    (seq is 1 in a cached decoding step). A vector is (d_model,) for every row or (batch, d_model), one per row
    (so several conditions share one batched generation). Hooks are removed on exit, also when the body raises.
    """

    def make(vec: torch.Tensor) -> Any:
        per_row = vec[:, None, :] if vec.ndim == 2 else vec

        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            mask = holder.mask
            if mask is None:
                return None
            h = _hidden(output)
            vec = per_row if holder.rows is None or per_row.ndim == 1 else per_row[holder.rows.to(per_row.device)]
            add = mask.to(h.dtype)[..., None] * vec.to(device=h.device, dtype=h.dtype)
            return _replace(output, h + add)

        return hook

    with hooked([(residual_module(model, layer), make(v)) for layer, v in vectors.items()]):
        yield holder


def attention_out_proj(model: Any, layer: int) -> torch.nn.Module:
    """The output projection of decoder layer ``layer``'s attention (1-based), whose input is the heads' concat."""
    block = residual_module(model, layer)
    proj = getattr(getattr(block, "self_attn", None), "o_proj", None)
    if proj is None:
        raise TypeError(f"decoder layer {layer} has no self_attn.o_proj (expected a Qwen2/Llama-style block)")
    return proj


def mlp_module(model: Any, layer: int) -> torch.nn.Module:
    return residual_module(model, layer).mlp


@contextmanager
def record_components(
    model: Any, rows: torch.Tensor, cols: torch.Tensor
) -> Iterator[dict[str, dict[int, torch.Tensor]]]:
    """Record, at ``(rows, cols)``, each layer's attention heads' concatenated output (the input of ``o_proj``,
    shape (N, heads * head_dim)) and each MLP block's output (N, d_model). Layers are 1-based."""
    out: dict[str, dict[int, torch.Tensor]] = {"heads": {}, "mlp": {}}

    def pre(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any) -> None:
            out["heads"][layer] = args[0][rows, cols].detach()

        return hook

    def post(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            out["mlp"][layer] = _hidden(output)[rows, cols].detach()

        return hook

    layers = range(1, len(decoder_layers(model)) + 1)
    with hooked(
        [(mlp_module(model, layer), post(layer)) for layer in layers],
        pre=[(attention_out_proj(model, layer), pre(layer)) for layer in layers],
    ):
        yield out


@contextmanager
def ablate(
    model: Any,
    heads: dict[int, list[int]],
    mlps: list[int],
    head_dim: int,
    head_means: dict[int, torch.Tensor] | None = None,
    mlp_means: dict[int, torch.Tensor] | None = None,
    patch: dict[int, torch.Tensor] | None = None,
    positions: torch.Tensor | None = None,
) -> Iterator[None]:
    """Zero- or mean-ablate heads (``heads[layer]`` = head indices) and MLP blocks at every position.

    ``head_means[layer]`` (heads * head_dim,) / ``mlp_means[layer]`` (d_model,) switch to mean ablation. With
    ``patch[layer]`` (batch, heads * head_dim) and ``positions`` (batch,), the listed heads' outputs at those
    positions are *replaced* by the patch instead (activation patching). Hooks are removed on exit.
    """

    def pre(layer: int, idx: list[int]) -> Any:
        cols = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in idx])

        def hook(module: torch.nn.Module, args: Any) -> Any:
            x = args[0].clone()
            if patch is not None and positions is not None:
                b = torch.arange(x.shape[0])
                x[b[:, None], positions[:, None], cols[None, :]] = patch[layer][:, cols].to(x.dtype)
            elif head_means is not None:
                x[..., cols] = head_means[layer][cols].to(x.dtype)
            else:
                x[..., cols] = 0
            return (x, *args[1:])

        return hook

    def post(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            h = _hidden(output)
            repl = mlp_means[layer].to(h.dtype).expand_as(h) if mlp_means is not None else torch.zeros_like(h)
            return _replace(output, repl)

        return hook

    with hooked(
        [(mlp_module(model, layer), post(layer)) for layer in mlps],
        pre=[(attention_out_proj(model, layer), pre(layer, idx)) for layer, idx in heads.items() if idx],
    ):
        yield


@contextmanager
def record_component_means(model: Any, holder: MaskHolder) -> Iterator[dict[str, dict[int, list]]]:
    """Accumulate the sum and count of each layer's heads' concat (``o_proj`` input) and MLP output over the
    positions where ``holder.mask`` (batch, seq) is 1: the dataset means that mean ablation substitutes."""
    acc: dict[str, dict[int, list]] = {"heads": {}, "mlp": {}}

    def add(kind: str, layer: int, x: torch.Tensor) -> None:
        m = holder.mask.to(x.dtype)[..., None]
        s, n = (x * m).sum((0, 1)).detach(), float(m.sum())
        prev = acc[kind].get(layer)
        acc[kind][layer] = [s, n] if prev is None else [prev[0] + s, prev[1] + n]

    def pre(layer: int) -> Any:
        return lambda module, args: add("heads", layer, args[0])

    def post(layer: int) -> Any:
        return lambda module, args, output: add("mlp", layer, _hidden(output))

    layers = range(1, len(decoder_layers(model)) + 1)
    with hooked(
        [(mlp_module(model, layer), post(layer)) for layer in layers],
        pre=[(attention_out_proj(model, layer), pre(layer)) for layer in layers],
    ):
        yield acc


@contextmanager
def replace_residual(
    model: Any, layer: int, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor
) -> Iterator[None]:
    """Replace residual layer ``layer`` at positions ``(rows[i], cols[i])`` with ``values[i]`` (activation patching
    of the residual stream) in every forward pass run in the body. Hooks are removed on exit."""

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        h = _hidden(output).clone()
        h[rows.to(h.device), cols.to(h.device)] = values.to(device=h.device, dtype=h.dtype)
        return _replace(output, h)

    with hooked([(residual_module(model, layer), hook)]):
        yield
