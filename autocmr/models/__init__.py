"""Trained models as things users install and move: the model folder itself (:mod:`autocmr.models.folder`,
read by inference and written by training), the packaged default model, models imported from an archive, the
compact shipped form, archives for offline machines, and model cards."""
