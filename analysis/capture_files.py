"""The files of a streamed capture (:func:`analysis.capture.capture_to_dir`): one layer-major ``act_<kind>.npy``
per position kind, shape (layers + 1, sites, d_model), created sparse before the first pass, and ``meta.npz``;
:class:`Capture` reads them back one layer at a time, so no reader holds the whole capture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from analysis.positions import KINDS


def empty_npy(path: Path, dtype: Any, shape: tuple[int, ...]) -> int:
    """Create a (sparse) ``.npy`` file of ``shape`` at ``path``; returns the byte offset of its data."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        f.truncate(offset + size)
    return offset


class Capture:
    """A capture written by :func:`capture_to_dir`, read lazily: metadata arrays by name (``cap["problem"]``),
    activations one layer of one kind at a time (:meth:`layer`), so no reader holds the whole capture."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        with np.load(self.dir / "meta.npz", allow_pickle=False) as z:
            self.meta = {k: z[k] for k in z.files}
        self._heads: dict[str, tuple[tuple[int, ...], Any, int]] = {}
        for k in KINDS:
            with open(self.dir / f"act_{k}.npy", "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
                self._heads[k] = (shape, dtype, f.tell())
        self.n_layers, self.n_sites, self.d = self._heads[KINDS[0]][0]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.meta[key]

    def __contains__(self, key: str) -> bool:
        return key in self.meta

    def layer(self, kind: str, layer: int) -> np.ndarray:
        """Activations (sites, d_model) of residual layer ``layer`` at position kind ``kind``, in storage dtype."""
        shape, dtype, offset = self._heads[kind]
        if not 0 <= layer < shape[0]:
            raise IndexError(f"layer {layer} not in 0..{shape[0] - 1}")
        count = shape[1] * shape[2]
        pos = offset + layer * count * dtype.itemsize
        return np.fromfile(self.dir / f"act_{kind}.npy", dtype=dtype, count=count, offset=pos).reshape(shape[1:])

    def chunks(self, kind: str, rows: np.ndarray | None, max_bytes: int) -> Iterator[tuple[range, np.ndarray]]:
        """Consecutive layer ranges with the activations of ``rows`` (a site mask or index; None: every site)
        stacked as (sites, layers in the range, d_model) in storage dtype, each at most ``max_bytes`` (one layer at
        least): a capture that fits is read in one chunk, a 3B model's in as many as its size needs."""
        n = self.n_sites if rows is None else int(rows.sum()) if rows.dtype == bool else len(rows)
        size = max(1, max_bytes // max(n * self.d * self._heads[kind][1].itemsize, 1))
        for start in range(0, self.n_layers, size):
            layers = range(start, min(start + size, self.n_layers))
            parts = [self.layer(kind, layer) for layer in layers]
            yield layers, np.stack(parts if rows is None else [x[rows] for x in parts], axis=1)


def read_capture(directory: Path) -> Capture:
    """The capture stored in ``directory`` (see :func:`capture_to_dir`)."""
    return Capture(directory)
