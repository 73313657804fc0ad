"""Training code of the embedded default model, not shipped in the wheel.

Analytic shapes, procedural multi-view data, the model components, training, sampling, metrics.

The trained model lives in ``sjc_engine/models/embedded/`` (diffusers format + ``sjc_model.json``) and is
loaded by :mod:`sjc_engine.denoisers.loader` like any pixel text-conditioned diffusers model.
"""
