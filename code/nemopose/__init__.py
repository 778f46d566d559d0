"""nemopose: a PyTorch reimplementation of NeMo (Wang, Kortylewski, Yuille, ICLR 2021).

Neural Mesh Models of contrastive features for robust category-level 3D pose estimation.

Modules: constants, geometry (the camera model), mesh (OFF, cuboids), render (rasteriser,
feature renderer), zbuffer (the rasteriser's nearest-face stage), data (layout, PASCAL3D+ reading, preparation, 3D annotations, synthetic
PASCAL3D+, datasets), model (ResNetExt, light backbone), bank (feature bank and loss),
train, checkpoint, distributed, feature_quality, pose (render-and-compare solver),
inference, evaluate, visualize, predict (unlabeled images), viewpoints (statistics).
"""

__version__ = "0.1.0"
