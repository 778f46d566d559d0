"""The feature bank, the clutter queue and NeMo's contrastive loss (METHOD.md §8).

A bank per (category, mesh) holds, in one ``memory`` buffer of shape ``(nV + Q, d)``, the
``nV`` vertex features followed by a queue of ``Q = num_noise * max_group`` clutter
(background) features, all unit length. As in MoCo, the memory and the queue pointer are
registered buffers, changed only by one ``@torch.no_grad()`` method (:meth:`FeatureBank.update`),
so that ``state_dict()``, ``.to(device)`` and checkpoints need no extra code.

One training step (the original's order):

1. ``memory = bank.memory.clone()``: the loss uses the memory as it was before this batch;
2. ``loss = nemo_loss(features, memory, ...)``;
3. ``bank.update(global_features, global_weights)`` with the whole (all-gathered) batch;
4. ``loss.backward()``.

Quirks of the original kept as defaults (see the helpers): the vertex update divides the
weighted sum by the batch size, not by the number of images that see the vertex
(:func:`original_vertex_mean`); the queue's slot count is fixed by the first batch's size
(:meth:`FeatureBank._queue_slots_for`); the momentum is stored as float32 (0.9f).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Logit offset of masked (near-vertex) negatives; the original subtracts this, not -inf.
NEAR_MASK_OFFSET = 1e5


def original_vertex_mean(weighted: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Quirk of the original: the batch "mean" of the weighted vertex features divides by the
    batch size B, so a vertex seen in few images moves little (and its update is shrunk by
    its visibility weights). Kept as the default; ``mean_over_visible=True`` uses
    :func:`visible_vertex_mean` instead.

    Args:
        weighted: ``(B, nV, d)`` weights * features; weights: ``(B, nV)``.
    Returns:
        ``(nV, d)``.
    """
    return weighted.mean(0)


def visible_vertex_mean(weighted: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Corrected mean: divide by the summed visibility weights of each vertex (none -> 0, so
    the vertex keeps its direction)."""
    return weighted.sum(0) / weights.sum(0).clamp_min(1e-12).unsqueeze(1)


def float32_momentum(momentum: float) -> float:
    """Quirk: the original keeps the momentum in a float32 buffer and reads it back with
    ``.item()`` (0.9 -> 0.8999999761581421), so ``1 - m`` is not float32(0.1). Using the same
    value reproduces its memory to the last bit."""
    return float(torch.tensor(momentum, dtype=torch.float32).item())


class FeatureBank(nn.Module):
    """Vertex features + clutter queue of one mesh.

    Args:
        num_vertices: nV, the mesh's vertex count.
        dim: feature dimension d (128).
        num_noise: clutter features per image (5).
        max_group: queue length in units of ``num_noise`` (512 -> Q = 2560 rows).
        momentum: vertex-feature momentum (0.9).
        mean_over_visible: corrected vertex mean (see :func:`original_vertex_mean`).
        generator: for the uniform initialisation in ``[-s, s]``, ``s = 1/sqrt(d/3)``.

    Buffers:
        memory ``(nV + Q, d)``; queue_ptr: the next queue slot; queue_slots: the number of
        slots (-1 until the first update fixes it from the batch size).
    """

    def __init__(self, num_vertices: int, dim: int = 128, num_noise: int = 5, max_group: int = 512,
                 momentum: float = 0.9, mean_over_visible: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__()
        if num_vertices <= 0 or dim <= 0 or num_noise < 0 or max_group < 0:
            raise ValueError(f"invalid bank size nV={num_vertices} d={dim} num_noise={num_noise} max_group={max_group}")
        self.num_vertices = num_vertices
        self.num_noise = num_noise
        self.momentum = momentum
        self.mean_over_visible = mean_over_visible
        rows = num_vertices + num_noise * max_group
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory", torch.rand(rows, dim, generator=generator) * (2 * stdv) - stdv)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_slots", torch.full((), -1, dtype=torch.long))

    @property
    def queue_size(self) -> int:
        return self.memory.shape[0] - self.num_vertices

    @property
    def vertex_memory(self) -> torch.Tensor:
        """``(nV, d)`` vertex features."""
        return self.memory[: self.num_vertices]

    @property
    def clutter_memory(self) -> torch.Tensor:
        """``(Q, d)`` clutter features."""
        return self.memory[self.num_vertices:]

    def similarities(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full similarity tensors of the original (reference; the loss computes only the rows
        it needs).

        Args:
            features: ``(B, nV + n_noise, d)``.
        Returns:
            sim ``(B, nV, nV + Q)`` = vertex features . memory, and noise_sim
            ``(B, n_noise, nV)`` = clutter features . vertex memory.
        """
        self._check_features(features)
        nv = self.num_vertices
        memory = self.memory.detach()
        return features[:, :nv] @ memory.t(), features[:, nv:] @ memory[:nv].t()

    def _check_features(self, features: torch.Tensor) -> None:
        if features.dim() != 3 or features.shape[1] != self.num_vertices + self.num_noise \
                or features.shape[2] != self.memory.shape[1]:
            raise ValueError(f"features must be (B, {self.num_vertices + self.num_noise}, "
                             f"{self.memory.shape[1]}), got {tuple(features.shape)}")

    def _queue_slots_for(self, batch: int) -> int:
        """Quirk of the original: the queue is cut into slots of ``num_noise * B`` rows with B
        the size of the FIRST batch the bank sees (``(Q // (num_noise * B))`` slots); later
        batches write at ``ptr * num_noise * B_now``. A first batch larger than the queue leaves
        the slot count unset (-1) and every such batch overwrites the whole queue."""
        if int(self.queue_slots) == -1 and batch * self.num_noise <= self.queue_size:
            self.queue_slots.fill_(self.queue_size // (self.num_noise * batch))
        return int(self.queue_slots)

    @torch.no_grad()
    def update(self, features: torch.Tensor, weights: torch.Tensor) -> None:
        """Momentum update of the vertex rows, enqueue of the clutter rows, renormalisation.

        Args:
            features: ``(B, nV + n_noise, d)`` of the whole (global) batch, unit length.
            weights: ``(B, nV)`` visibility weights (0 = not visible).
        """
        self._check_features(features)
        assert weights.shape == features.shape[:1] + (self.num_vertices,), \
            f"weights must be (B, nV), got {tuple(weights.shape)}"
        features = features.detach().to(self.memory.dtype)
        weights = weights.to(self.memory.dtype)
        batch, nv, n = features.shape[0], self.num_vertices, self.num_noise
        assert batch > 0, "empty batch"

        weighted = features[:, :nv] * weights.unsqueeze(-1)            # (B, nV, d)
        mean = visible_vertex_mean if self.mean_over_visible else original_vertex_mean
        g = mean(weighted, weights)                                      # (nV, d)
        m = float32_momentum(self.momentum)
        new_memory = self.memory.clone()
        new_memory[:nv] = self.memory[:nv] * m + g * (1 - m)

        if n > 0:
            clutter = features[:, nv:].reshape(-1, features.shape[2])   # (B * n, d)
            q = self.queue_size
            slots = self._queue_slots_for(batch)
            if batch * n > q:
                new_memory[nv:] = clutter[:q]
            else:
                start = int(self.queue_ptr) * n * batch
                assert start + n * batch <= q, (
                    f"queue overflow: slot {int(self.queue_ptr)} of {n * batch} rows at {start} in a "
                    f"{q}-row queue (batch {batch} larger than the first batch?)")
                new_memory[nv + start: nv + start + n * batch] = clutter
            self.queue_ptr.fill_((int(self.queue_ptr) + 1) % slots if slots > 0 else 0)
        self.memory.copy_(F.normalize(new_memory, p=2, dim=1))


# ----------------------------------------------------------------------------- loss


def near_vertex_mask(vertex_pixels: torch.Tensor, distance_thr: float,
                     rows: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Pairs of vertices whose pixels are within ``distance_thr`` of each other, excluding each
    vertex with itself: they are not used as negatives of each other.

    Args:
        vertex_pixels: ``(B, nV, 2)`` (row, col).
        rows: optional ``(b, v)`` index tensors selecting R rows.
    Returns:
        bool ``(B, nV, nV)``, or ``(R, nV)`` for the selected rows.
    """
    kp = vertex_pixels.float()
    if rows is None:
        diff = kp.unsqueeze(1) - kp.unsqueeze(2)                        # (B, nV, nV, 2)
        eye = torch.eye(kp.shape[1], dtype=torch.bool, device=kp.device)
        return (diff.pow(2).sum(-1).pow(0.5) <= distance_thr) & ~eye
    b, v = rows
    diff = kp[b] - kp[b, v].unsqueeze(1)                                # (R, nV, 2)
    near = diff.pow(2).sum(-1).pow(0.5) <= distance_thr
    near[torch.arange(len(v), device=kp.device), v] = False
    return near


def nemo_loss(features: torch.Tensor, memory: torch.Tensor, num_vertices: int,
              vertex_pixels: torch.Tensor, weights: torch.Tensor, temperature: float = 0.07,
              distance_thr: float = 48.0, clutter_prior: float = 5e-3, clutter_loss_weight: float = 0.1,
              ce_count: float | None = None, noise_count: float | None = None) -> tuple[torch.Tensor, dict]:
    """NeMo's training loss for one batch.

    ``logits = (x_v . memory) / temperature``; columns of vertices within ``distance_thr`` pixels of the
    row's vertex get ``-1e5`` (not negatives), the clutter columns get ``+log(clutter_prior)``;
    cross-entropy with target = the row's own vertex, over vertices with weight > 0, averaged;
    plus ``clutter_loss_weight * mean(clutter features . vertex memory)``.

    Only the rows with weight > 0 are computed (identical loss and gradients, much less work).

    Args:
        features: ``(B, nV + n_noise, d)`` unit vectors (requires grad in training).
        memory: ``(nV + Q, d)`` the bank BEFORE this batch's update (a copy).
        vertex_pixels: ``(B, nV, 2)`` (row, col) pixels of the vertices.
        weights: ``(B, nV)`` visibility weights.
        ce_count, noise_count: divide the summed cross-entropy / clutter similarity by these
            instead of the local counts (distributed training passes global count / world
            size, so that DDP's gradient average is the global-batch gradient).
    Returns:
        (loss, stats): stats holds ``ce_sum`` and ``noise_sum`` (the summed cross-entropy and
        clutter similarity, detached tensors, not normalised) and the counts ``ce_rows`` and
        ``noise_entries`` (floats) they are divided by.
    """
    nv = num_vertices
    if features.dim() != 3 or features.shape[1] < nv:
        raise ValueError(f"features must be (B, nV + n_noise, d) with nV={nv}, got {tuple(features.shape)}")
    if vertex_pixels.shape != features.shape[:1] + (nv, 2) or weights.shape != features.shape[:1] + (nv,):
        raise ValueError(f"vertex_pixels {tuple(vertex_pixels.shape)} / weights {tuple(weights.shape)} "
                         f"do not match features {tuple(features.shape)} with nV={nv}")
    memory = memory.detach()
    b, v = torch.nonzero(weights > 0, as_tuple=True)                   # R visible rows
    logits = features[b, v] @ memory.t() / temperature                          # (R, nV + Q)
    # The original subtracts a mask tensor; in place here (same float operations, no second
    # (R, nV + Q) tensor): near vertices - 1e5, clutter columns - (-log clutter_prior).
    near = near_vertex_mask(vertex_pixels, distance_thr, rows=(b, v))  # (R, nV)
    logits[:, :nv].sub_(near.to(logits.dtype), alpha=NEAR_MASK_OFFSET)
    logits[:, nv:].sub_(-math.log(clutter_prior))
    ce_sum = F.cross_entropy(logits, v, reduction="sum")
    noise_sim = features[:, nv:] @ memory[:nv].t()                    # (B, n_noise, nV)
    noise_sum = noise_sim.sum()
    ce_rows, noise_entries = float(len(v)), float(noise_sim.numel())
    ce_div = ce_rows if ce_count is None else ce_count
    noise_div = noise_entries if noise_count is None else noise_count
    loss = ce_sum / ce_div
    if noise_sim.numel() > 0:
        loss = loss + clutter_loss_weight * noise_sum / noise_div
    stats = {"ce_sum": ce_sum.detach(), "noise_sum": noise_sum.detach(),
             "ce_rows": ce_rows, "noise_entries": noise_entries}
    return loss, stats


def reference_loss(features: torch.Tensor, bank_memory: torch.Tensor, num_vertices: int,
                   vertex_pixels: torch.Tensor, weights: torch.Tensor, temperature: float = 0.07,
                   distance_thr: float = 48.0, clutter_prior: float = 5e-3,
                   clutter_loss_weight: float = 0.1) -> torch.Tensor:
    """The loss computed the original's way, on the full ``(B, nV, nV + Q)`` tensors (slow;
    for tests)."""
    nv = num_vertices
    sim = features[:, :nv] @ bank_memory.t() / temperature
    noise_sim = features[:, nv:] @ bank_memory[:nv].t()
    near = near_vertex_mask(vertex_pixels, distance_thr).to(sim.dtype) * NEAR_MASK_OFFSET
    clutter = torch.full(sim.shape[:2] + (bank_memory.shape[0] - nv,), -math.log(clutter_prior), dtype=sim.dtype)
    mask = torch.cat([near, clutter], dim=2)
    visible = (weights > 0).reshape(-1)
    target = torch.arange(nv).repeat(features.shape[0])
    ce = F.cross_entropy((sim - mask).reshape(-1, sim.shape[2])[visible], target[visible])
    return ce + clutter_loss_weight * noise_sim.mean() if noise_sim.numel() else ce
