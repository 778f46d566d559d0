"""Datasets: the on-disk layout, PASCAL3D+ reading and preparation, 3D annotations, the
synthetic PASCAL3D+, and torch datasets."""
