"""Tools around a trained model, each ``python -m nemopose.tools.<name>``: pictures of a
solve (:mod:`.visualize`), the viewpoint distribution (:mod:`.viewpoints`), feature quality
(:mod:`.feature_quality`) and the accuracy plots (:mod:`.plots`)."""
