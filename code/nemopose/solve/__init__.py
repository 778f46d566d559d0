"""Pose solving by render-and-compare: the neural mesh (:mod:`.neural_mesh`: cuboid, vertex
features and clutter from a checkpoint), the loss of any batch of poses behind one scorer
interface (:mod:`.score`, the PyTorch reference; :mod:`.score_triton`, the same as Triton
kernels on CUDA) and the optimiser over images and starts (:mod:`.solver`)."""
