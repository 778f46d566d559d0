""""Is the object there?": the presence score of a solved pose (METHOD.md §16.3).

The pose solver always returns a pose, even on noise. What tells an object from no object
is how well the mesh explains the pixels it covers: NeMo's clutter model gives every
feature a background score ``s_c = <f, clutter>``, the mesh at the solved pose gives the
covered pixels an object score ``s_o = <f, rendered vertex feature>``, and on an object
``s_o`` beats ``s_c`` by a margin the network was trained for (the contrastive loss pushes
vertex features away from the clutter features). The score is

    score = mean over the covered feature-map cells of (s_o - s_c)        (in [-2, 2])

It does not depend on the canvas size (unlike the solver's loss, a mean over all cells), so
it also compares the candidate scales of a whole photo. Where nothing is covered it is -2.
The threshold that turns it into yes/no is calibrated per checkpoint
(:mod:`nemopose.photo.calibration`).
"""

from __future__ import annotations

import torch

from .. import geometry
from ..solve.solver import MeshPoseSolver

NO_COVERAGE_SCORE = -2.0


def presence_scores(solver: MeshPoseSolver, feature_maps: torch.Tensor, clutter: torch.Tensor,
                    poses: torch.Tensor, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """The presence score of one pose per image.

    Args:
        solver: the mesh's solver for maps of this size.
        feature_maps: (B, C, h, w) unit feature maps.
        clutter: (C,) the mesh's clutter vector.
        poses: (B, 4) azimuth, elevation, theta (radians), render distance.
        shifts: (B, 2) principal-point shifts in map pixels, or None.
    Returns:
        (B,) float tensor on the CPU.
    """
    scorer = solver.scorer
    with torch.no_grad():
        images = scorer.prepare(feature_maps, clutter)
        poses = poses.to(scorer.device, torch.float32)
        centers = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
        shift = None if shifts is None else shifts.to(scorer.device, torch.float32)
        fragments = scorer.rasterize(centers, poses[:, 2], shift)
        n = poses.shape[0]
        index = torch.arange(n, device=scorer.device)
        s_o = scorer.object_scores(fragments, index, images)                    # (B, P), 0 off the mesh
        covered = (fragments.pix_to_face.reshape(n, -1) >= 0).to(s_o.dtype)
        margin = ((s_o - images.clutter_score) * covered).sum(1)
        count = covered.sum(1)
        score = torch.where(count > 0, margin / count.clamp(min=1), torch.full_like(margin, NO_COVERAGE_SCORE))
    return score.cpu()
