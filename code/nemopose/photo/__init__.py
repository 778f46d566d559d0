"""Pose from photos: boxes, the detector, the no-object answer, overlays at the photo's resolution.

- :mod:`.boxes`: boxes (``--boxes`` CSV), the training objects' size by box shape, the crop
  of a box as the data preparation crops an object;
- :mod:`.presence`: the presence score of a solved pose ("is the object there?");
- :mod:`.calibration`: the per-checkpoint object sizes and presence threshold
  (``<checkpoint>.photo.json``);
- :mod:`.detect`: the torchvision COCO detector for ``--detect``;
- :mod:`.draw`: the pictures at the photo's resolution;
- :mod:`.command`: ``python -m nemopose.predict``.

The predictor that uses them is :class:`nemopose.predict.PosePredictor`.
"""
