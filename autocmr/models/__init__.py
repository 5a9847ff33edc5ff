"""Trained models as things users install and move: the packaged default model, models imported from an
archive, the compact shipped form, archives for offline machines, and model cards."""
