"""Pose from photos: boxes, the detector, the no-object answer, overlays at the photo's resolution."""
