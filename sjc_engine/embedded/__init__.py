"""The embedded default model: analytic shapes, procedural multi-view data, components, training, sampling.

The trained model lives in ``sjc_engine/models/embedded/`` (diffusers format + ``sjc_model.json``) and is
loaded by :mod:`sjc_engine.denoisers.loader` like any pixel text-conditioned diffusers model.
"""
