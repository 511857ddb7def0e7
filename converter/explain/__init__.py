"""Where an artifact's error starts: a layer map from the float model to the artifact's tensors, each layer's
accumulated and local error, a ranking, and a suggestion in recipe terms (docs/explain.md).

Modules: source (the float model, layer by layer), names and layermap (the map), measure (SQNR, cosine, layout),
local and tflite_debug (what a layer adds by itself), weights (what is unusual about it), rank (the verdict),
suggest (the recipe change), analysis (all of it for one artifact on one backend), failures (the run's hook).
"""
