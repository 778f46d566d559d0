"""nemopose: a PyTorch reimplementation of NeMo (Wang, Kortylewski, Yuille, ICLR 2021).

Neural Mesh Models of contrastive features for robust category-level 3D pose estimation.
Modules: constants, geometry (camera model), mesh, render, model, bank, data, train,
extract, pose, evaluate, visualize.
"""

__version__ = "0.1.0"
