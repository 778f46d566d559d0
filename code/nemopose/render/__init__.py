"""Rendering: the camera (:mod:`.camera`), the differentiable rasteriser and feature renderer
(:mod:`.raster`) and its nearest-face stage (:mod:`.zbuffer`).

The public names of :mod:`.camera` and :mod:`.raster` are re-exported here, so
``from nemopose import render; render.rasterize(...)`` reads as one API.
"""

from .camera import RenderCamera, project_vertices
from .raster import (CoveredPixels, FeatureRenderer, Fragments, interpolate_vertex_features, rasterize,
                     rasterize_covered, rasterize_reference, render_features)

__all__ = ["RenderCamera", "project_vertices", "Fragments", "CoveredPixels", "rasterize", "rasterize_covered",
           "rasterize_reference", "interpolate_vertex_features", "render_features", "FeatureRenderer"]
