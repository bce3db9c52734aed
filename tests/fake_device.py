"""A stand-in CUDA device for device-placement tests on a CPU-only build of torch.

What a GPU would reject, this rejects too: an op that mixes a tensor "on cuda:0" with a CPU tensor of one or more
dimensions (allowed, as on CUDA: a 0-dim CPU tensor, CPU index tensors, ``copy_``), and ``.numpy()`` on a tensor
"on cuda:0". Tensors "on
cuda:0" are CPU tensors of the subclass :class:`OnFakeCuda`, whose ``device`` says ``cuda:0``; inside
:class:`FakeCuda`, anything created or moved with ``device="cuda"`` (``model.to("cuda")``, ``torch.zeros(...,
device=x.device)``, ``ids.to(model.device)``) becomes one, and ``.cpu()`` / ``.to("cpu")`` turn it back.

Why not torch's FakeTensorMode or the meta device: they carry no data, and the analysis reads data everywhere
(argmax, generation, ``.item()``), so a stage could not run to its end under them. Here every op computes on the
CPU for real, so a stage runs end to end and fails only where a GPU would.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)


def _is_cuda(d: Any) -> bool:
    if not isinstance(d, str | torch.device):
        return False
    try:
        return torch.device(d).type == "cuda"
    except (RuntimeError, ValueError):
        return False


class OnFakeCuda(torch.Tensor):
    """A CPU tensor that says it lives on cuda:0 (and behaves so: see the module docstring)."""

    @staticmethod
    def __new__(cls, t: torch.Tensor) -> OnFakeCuda:
        return torch.Tensor._make_subclass(cls, t, t.requires_grad)

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return _dispatch(func, args, kwargs or {})


def _plain(x: Any) -> Any:
    if isinstance(x, OnFakeCuda):
        with torch._C.DisableTorchFunctionSubclass():
            return x.as_subclass(torch.Tensor)
    return x


def _on_cuda(x: Any) -> Any:
    if not isinstance(x, torch.Tensor) or isinstance(x, OnFakeCuda):
        return x
    if isinstance(x, torch.nn.Parameter):  # module.to("cuda") makes a new Parameter from this
        with torch._C.DisableTorchFunctionSubclass():
            x = x.detach().requires_grad_(x.requires_grad)
    return OnFakeCuda(x)


def _target(name: str, args: Any, kwargs: dict[str, Any]) -> Any:
    target = kwargs.get("device")
    if name == "to":
        target = next((a for a in args[1:] if isinstance(a, str | torch.device)), target)
    return target


def _dispatch(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    name = getattr(func, "__name__", "")
    tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
    on_cuda = any(isinstance(x, OnFakeCuda) for x in tensors)
    if name == "_has_compatible_shallow_copy_type":  # a CPU Parameter cannot take cuda data in place
        return all(isinstance(x, OnFakeCuda) for x in tensors) or not on_cuda
    if name == "__deepcopy__":  # (self, memo): the memo holds earlier copies, not operands
        with torch._C.DisableTorchFunctionSubclass():
            return _on_cuda(func(_plain(args[0]), {}))
    if on_cuda:
        operands = tensors
        if name in ("__getitem__", "__setitem__") and isinstance(args[0], OnFakeCuda):  # CPU indices are allowed
            operands = [x for x in tree_flatten((args[0], args[2:]))[0] if isinstance(x, torch.Tensor)]
        if name == "copy_":  # copies across devices are what copy_ is for
            operands = []
        cpu = [x for x in operands if not isinstance(x, OnFakeCuda) and x.dim() > 0]
        if cpu:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
                f"({name}: a CPU tensor of shape {tuple(cpu[0].shape)}; tests/fake_device.py)"
            )
        if name == "numpy":
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")
    target = _target(name, args, kwargs)
    if name == "cpu" or (name == "to" and target is not None and not _is_cuda(target)):
        return func(*tree_map(_plain, args), **kwargs)
    if name == "cuda":
        return _on_cuda(_plain(args[0]))

    def host(a: Any) -> Any:
        if isinstance(a, torch.device) and a.type == "cuda":
            return torch.device("cpu")
        if name == "to" and isinstance(a, str) and _is_cuda(a):
            return "cpu"
        return _plain(a)

    with torch._C.DisableTorchFunctionSubclass():
        out = func(*[host(a) for a in args], **{k: host(v) for k, v in kwargs.items()})
    return tree_map(_on_cuda, out) if on_cuda or _is_cuda(target) else out


class FakeCuda(TorchFunctionMode):
    """Within it, ``device="cuda"`` means :class:`OnFakeCuda` (see the module docstring)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        flat = tree_flatten((args, kwargs))[0]
        if _is_cuda(_target(name, args, kwargs)) or name == "cuda" or any(isinstance(x, OnFakeCuda) for x in flat):
            return _dispatch(func, args, kwargs)
        return func(*args, **kwargs)
