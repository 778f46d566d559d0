"""nemopose: a PyTorch reimplementation of NeMo (Wang, Kortylewski, Yuille, ICLR 2021).

Neural Mesh Models of contrastive features for robust category-level 3D pose estimation.
The method is written down in ``code/METHOD.md``; docstrings cite its sections ("METHOD.md §6.1").

The map of the package (one module per concept, subpackages by role; this docstring is the
one place that lists them):

Foundations (top level)
    constants     per-category tables, image and feature-map sizes, camera constants, the
                  authors' published numbers
    geometry      the one camera model; PASCAL3D+ vs render distance; rotation error
    mesh          OFF files, cuboids, convexity
    experiment    the experiment folder: every path, checkpoint resolution
    distributed   torchrun / DDP plumbing
    errors        expected mistakes (one-line errors at the command line)
    utils         atomic writes with the user's umask, logging, seeds

Entry points (top level)
    inference     InferenceNeMo.sh: maps -> poses -> accuracy tables
    evaluate      metrics, tables, summaries (``python -m nemopose.evaluate``)
    predict       ``PosePredictor`` and ``python -m nemopose.predict``: poses in photos

cli/       what every entry point shares: one-line errors (``run``), the category and
           yes/no options
    progress      progress bars on a terminal, whole lines in a log file
    next_steps    the commands an error names (prepare, then train, then infer; the
                  demo's folders)

render/    the differentiable renderer
    camera        the solver's pinhole camera, projection of vertices
    raster        the rasteriser (fast and reference), feature interpolation and rendering
    zbuffer       the rasteriser's discrete stage: the nearest face at each pixel

solve/     pose by render-and-compare
    neural_mesh   a trained neural mesh (cuboid + vertex features + clutter); the best pose
                  over several meshes
    score         the scorer interface and its PyTorch reference (the loss of any poses)
    score_triton  the same loss and gradient as Triton kernels (CUDA)
    score_numba   the same loss and gradient as compiled CPU kernels (Numba)
    solver        the Adam optimiser over images x starts (``MeshPoseSolver``)

train/     TrainNeMo.sh (``python -m nemopose.train``)
    model         ResNetExt and the light CPU backbone
    bank          the feature bank, clutter queue and contrastive loss
    config        settings, presets and the original's training quirks
    loader        keyed sampling and the one data loader per run
    precision     fp32 / bf16
    checkpoint    checkpoint IO (ours and the authors' format), exact resume
    loop          the training engine

data/      PrepareData.sh (``python -m nemopose.data.prepare``) and the datasets
    layout        the data folder; mat_record: the PASCAL3D+ .mat record; annotation:
                  NeMo's annotation files; pascal3d: release folders and images; crop;
                  annotate3d: per-vertex 3D annotations; stages + prepare: the preparation;
                  synthetic, synthetic_cad, synthetic_scene: the synthetic PASCAL3D+;
                  datasets: torch datasets

fetch/     everything that downloads
    download      resumable HTTP with Range; drive: Google Drive; archive: safe extraction;
    sources       the dataset archives; weights: ImageNet ResNet-50 and the COCO
                  detectors; checkpoints: the authors' released models

photo/     what the photo predictor adds to the pipeline
    boxes         boxes, the training objects' size by box shape, the crop of a box
    presence      the presence score of a solved pose ("is the object there?")
    calibration   the per-checkpoint object sizes and presence threshold (.photo.json)
    detect        the torchvision COCO detector; draw: pictures at the photo's resolution
    command       ``python -m nemopose.predict`` (CSV, pictures, the demo's example)

tools/     ``python -m nemopose.tools.<name>``
    visualize     pictures of a solve; viewpoints: the pose distribution; feature_quality:
                  how well features match vertices; plots: accuracy curves
"""

__version__ = "0.2.0"
