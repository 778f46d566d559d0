""""Is the object there?": the presence score of a solved pose (METHOD.md §16.3).

The pose solver always returns a pose, even on noise. What tells an object from no object
is how well the mesh explains the pixels it covers, compared with explanations that have no
object in them. Over the feature-map cells C the mesh covers at the solved pose, with ``s_o``
the similarity of a cell's feature to the rendered vertex feature:

    score = mean_C s_o - max(mean_C s_c, max_v mean_C <f_v, f>)

The first rival is NeMo's clutter model (``s_c = <f, clutter>``): on an object ``s_o`` beats
it by the margin the contrastive training pushes for. The second is the best single vertex
feature ``f_v`` for all covered cells at once, a mesh with no arrangement: a flat or
repetitive image is explained by one feature as well as by the mesh, an object is not (its
parts have different features at the right places). With the clutter model alone, a flat
green image scored 0.76 against 0.69 to 0.96 for the demo's cars; with both rivals it
scores 0.01 against 0.5 to 0.75.

The score does not depend on the canvas size (unlike the solver's loss, a mean over all
cells), so it also compares the candidate scales of a whole photo. It is -2
(``IMPLAUSIBLE_SCORE``) where nothing is covered, where the pose puts the object at a size
the training crops never show (render distance outside ``PLAUSIBLE_DISTANCE`` times the
training objects' one: the solver can bring the camera into the cuboid, which then covers
every cell), and (:mod:`nemopose.predict`) where the object's origin projects outside the
photo or where the box's pixels are flat (standard deviation under ``FLAT_STD`` grey
levels: nothing to see; the demo's network, trained from scratch on flat-coloured synthetic
objects, said "yes" to 2 of 6 boxes around flat regions of a car's own colour). The
threshold that turns it into yes/no is calibrated per checkpoint
(:mod:`nemopose.photo.calibration`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .. import geometry
from ..solve.solver import MeshPoseSolver

IMPLAUSIBLE_SCORE = -2.0
FLAT_STD = 2.0                      # grey levels: a box whose pixels vary less holds nothing to see
PLAUSIBLE_DISTANCE = (0.4, 2.5)     # render distance / the training objects' render distance


def is_flat(image: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether the pixels of ``box`` (x0, y0, x1, y1; clipped to the image) are flat."""
    h, w = image.shape[:2]
    x0, y0 = min(max(int(box[0]), 0), w - 1), min(max(int(box[1]), 0), h - 1)
    x1, y1 = max(min(int(np.ceil(box[2])), w), x0 + 1), max(min(int(np.ceil(box[3])), h), y0 + 1)
    return float(image[y0:y1, x0:x1].reshape(-1, image.shape[-1]).std(0).max()) < FLAT_STD   # per channel


class Presence(NamedTuple):
    """Per image: ``score`` (module docstring) and ``clutter_margin`` = ``mean_C s_o -
    mean_C s_c`` (the first rival only), which picks among the scales of a whole photo (on
    the synthetic release photos: 95 / 70 % within pi/6 / pi/18, 6.3 degrees median on 20,
    against 95 / 60 %, 9.1 degrees when the score picks)."""

    score: torch.Tensor
    clutter_margin: torch.Tensor


def presence_scores(solver: MeshPoseSolver, feature_maps: torch.Tensor, clutter: torch.Tensor,
                    poses: torch.Tensor, shifts: torch.Tensor | None = None,
                    training_distance: float | None = None) -> Presence:
    """The presence score of one pose per image, and its clutter margin.

    Args:
        solver: the mesh's solver for maps of this size.
        feature_maps: (B, C, h, w) unit feature maps.
        clutter: (C,) the mesh's clutter vector.
        poses: (B, 4) azimuth, elevation, theta (radians), render distance.
        shifts: (B, 2) principal-point shifts in map pixels, or None.
        training_distance: the render distance of the training crops' objects
            (:func:`nemopose.data.crop.render_distance_for_crop`); None: no plausibility test.
    Returns:
        :class:`Presence` of (B,) float tensors on the CPU.
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
        count = covered.sum(1)
        per_cell = count.clamp(min=1)
        object_fit = (s_o * covered).sum(1) / per_cell
        clutter_fit = (images.clutter_score * covered).sum(1) / per_cell
        single_vertex_fit = torch.bmm(images.sim, covered[:, :, None]).squeeze(2).max(1).values / per_cell
        score = object_fit - torch.maximum(clutter_fit, single_vertex_fit)
        margin = object_fit - clutter_fit
        valid = count > 0
        if training_distance is not None:
            ratio = poses[:, 3] / training_distance
            valid &= (ratio >= PLAUSIBLE_DISTANCE[0]) & (ratio <= PLAUSIBLE_DISTANCE[1])
        implausible = torch.full_like(score, IMPLAUSIBLE_SCORE)
        return Presence(torch.where(valid, score, implausible).cpu(), torch.where(valid, margin, implausible).cpu())
