"""nemopose: a PyTorch reimplementation of NeMo (Wang, Kortylewski, Yuille, ICLR 2021).

Neural Mesh Models of contrastive features for robust category-level 3D pose estimation.

One module per concept:

- foundations: ``constants`` (per-category tables, image and map sizes, camera constants),
  ``geometry`` (the one camera model; PASCAL3D+ vs render distance), ``mesh`` (OFF, cuboids),
  ``render`` (rasteriser, feature renderer), ``zbuffer`` (its nearest-face stage), ``errors``
  and ``cli`` (expected mistakes, one-line errors), ``next_steps`` (the commands an error
  names), ``utils`` (atomic writes with the user's umask), ``progress`` (progress bars, or
  lines in a log file);
- data (``nemopose.data``): ``layout`` (the data folder), ``mat_record`` (the PASCAL3D+ .mat
  record), ``annotation`` (NeMo's annotation files), ``pascal3d`` (release folders), ``crop``,
  ``annotate3d``, ``stages`` and ``prepare`` (PrepareData.sh), ``sources`` (the archives to
  download), ``synthetic`` / ``synthetic_cad`` / ``synthetic_scene`` (the synthetic
  PASCAL3D+), ``datasets`` (torch datasets);
- learning: ``model`` (ResNetExt, light backbone), ``bank`` (feature bank, loss),
  ``train_config`` and ``train`` (TrainNeMo.sh), ``checkpoint`` (checkpoint IO),
  ``distributed`` (torchrun/DDP);
- pose: ``neural_mesh`` (mesh + vertex features + clutter from a checkpoint), ``score``
  (the render-and-compare loss of any poses; ``score_triton``: the same as two Triton
  kernels for CUDA), ``pose`` (the optimiser), ``experiment`` (the
  experiment folder), ``inference`` (InferenceNeMo.sh), ``evaluate`` and ``plots`` (tables,
  accuracy curves);
- tools: ``predict`` (unlabeled images, ``PosePredictor``), ``visualize``, ``viewpoints``,
  ``feature_quality``; downloads: ``download``, ``drive``, ``archive``.
"""

__version__ = "0.2.0"
