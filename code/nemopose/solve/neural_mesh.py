"""The neural mesh (METHOD.md §1, §8, §11): a cuboid mesh with a learned feature on every vertex, plus
the clutter model, as the pose solver and the tools use them.

A trained feature bank (:class:`nemopose.train.bank.FeatureBank`, saved in a checkpoint as one
``memory`` tensor per mesh) holds ``nV`` vertex rows followed by the clutter queue; the bank
is split here, once (:func:`split_bank`). The clutter model of the pose solver is the
normalised mean of the clutter rows (:func:`clutter_vector`).

    model, meshes, info = load_trained(checkpoint_path, layout.cuboid_paths(dataroot, "single", "car"))
    meshes[0].vertex_features      # (nV, 128), unit rows
    meshes[0].clutter              # (128,), unit
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .. import mesh
from ..train.checkpoint import load_network
from ..train.model import NeMoNet

if TYPE_CHECKING:
    from .solver import MeshPoseSolver


def split_bank(memory: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bank memory ``(nV + Q, C)`` -> vertex rows ``(nV, C)`` and clutter rows ``(Q, C)``."""
    if memory.dim() != 2 or memory.shape[0] <= num_vertices:
        raise ValueError(f"a bank for {num_vertices} vertices must be (nV + Q, C) with Q > 0, "
                         f"got {tuple(memory.shape)}")
    return memory[:num_vertices], memory[num_vertices:]


def clutter_vector(clutter_rows: torch.Tensor) -> torch.Tensor:
    """The clutter model's vector: the normalised mean of the bank's clutter rows, (C,)."""
    mean = clutter_rows.float().mean(0)
    return mean / mean.norm()


@dataclass
class NeuralMesh:
    """One neural mesh.

    Attributes:
        index: 1-based mesh index (``meshNN``; 1 for the single cuboid).
        verts: (V, 3) CAD-frame vertices; faces: (F, 3).
        vertex_features: (V, C) float32, the bank's vertex rows.
        clutter_rows: (Q, C) float32, the bank's clutter queue.
        clutter: (C,) the clutter vector (:func:`clutter_vector`).
    """

    index: int
    verts: np.ndarray
    faces: np.ndarray
    vertex_features: torch.Tensor
    clutter_rows: torch.Tensor
    clutter: torch.Tensor

    @classmethod
    def from_bank(cls, memory: torch.Tensor, mesh_path: str | os.PathLike, index: int = 1) -> "NeuralMesh":
        """Build from a bank memory and the cuboid OFF file it was trained with."""
        verts, faces = mesh.load_off(mesh_path)
        try:
            vertex_rows, clutter_rows = split_bank(memory, len(verts))
        except ValueError as exc:
            raise ValueError(f"{mesh_path}: {exc}") from exc
        return cls(index, verts, faces, vertex_rows.float(), clutter_rows.float(), clutter_vector(clutter_rows))

    @property
    def num_vertices(self) -> int:
        return len(self.verts)


def neural_meshes(memories: Sequence[torch.Tensor], mesh_paths: Sequence[str | os.PathLike]) -> list[NeuralMesh]:
    """One neural mesh per (bank, OFF file) pair, indexed 1, 2, ... in order."""
    if len(mesh_paths) != len(memories):
        folder = Path(mesh_paths[0]).parent if mesh_paths else "the mesh folder"
        raise ValueError(f"{len(mesh_paths)} meshes in {folder} but the checkpoint holds {len(memories)} banks; "
                         "was it trained with the other mesh dimension (single / multi)?")
    return [NeuralMesh.from_bank(memory, path, k) for k, (memory, path) in enumerate(zip(memories, mesh_paths), 1)]


def load_trained(checkpoint: str | os.PathLike | dict[str, Any], mesh_paths: Sequence[str | os.PathLike],
                 device: torch.device | str = "cpu",
                 test_head_bias: bool = False) -> tuple[NeMoNet, list[NeuralMesh], dict[str, Any]]:
    """A trained NeMo: the network (eval mode, on ``device``), its neural meshes and the
    checkpoint's info (see :func:`nemopose.train.checkpoint.load_network`)."""
    model, memories, info = load_network(checkpoint, device=device, test_head_bias=test_head_bias)
    return model, neural_meshes(memories, mesh_paths), info


# ----------------------------------------------------------------------------- several meshes


@dataclass(frozen=True)
class MeshSolution:
    """One image's pose from :func:`solve_over_meshes`, in the solver's units: angles in
    radians, ``distance`` the render distance, ``shift_x`` / ``shift_y`` the principal-point
    shift in feature-map pixels (0 unless translation is optimised), ``mesh`` the winning
    mesh's index."""

    azimuth: float
    elevation: float
    theta: float
    distance: float
    loss: float
    mesh: int
    shift_x: float = 0.0
    shift_y: float = 0.0


def solve_over_meshes(solvers: Sequence[MeshPoseSolver], meshes: Sequence[NeuralMesh], maps: torch.Tensor,
                      mesh_index: Sequence[int] | None = None) -> list[MeshSolution]:
    """Solve a block of images with several meshes and keep, per image, the lowest final loss.

    Args:
        solvers, meshes: one solver per mesh, in the same order.
        maps: (B, C, h, w) feature maps.
        mesh_index: per image, the one mesh (its ``index``) to solve with (the original:
            the annotated mesh); None tries every mesh (the lowest loss wins; ties keep the
            earlier mesh).
    Returns:
        B :class:`MeshSolution`.
    """
    best: list[MeshSolution | None] = [None] * maps.shape[0]
    for m, solver in zip(meshes, solvers):
        rows = [i for i in range(maps.shape[0]) if mesh_index is None or mesh_index[i] == m.index]
        if not rows:
            continue
        res = solver.solve(maps if len(rows) == maps.shape[0] else maps[rows], m.clutter)
        for j, i in enumerate(rows):
            cand = MeshSolution(azimuth=float(res.azimuth[j]), elevation=float(res.elevation[j]),
                                theta=float(res.theta[j]), distance=float(res.distance[j]), loss=float(res.loss[j]),
                                mesh=m.index, shift_x=0.0 if res.shift_x is None else float(res.shift_x[j]),
                                shift_y=0.0 if res.shift_y is None else float(res.shift_y[j]))
            if best[i] is None or cand.loss < best[i].loss:
                best[i] = cand
    missing = [i for i, b in enumerate(best) if b is None]
    if missing:
        raise ValueError(f"no mesh for images {missing}: mesh_index {[mesh_index[i] for i in missing]} "
                         f"not among {[m.index for m in meshes]}")
    return best  # type: ignore[return-value]
