"""Configuration selection by cross-validation (nnU-Net's ``find_best_configuration``, generalised).

Given trained model folders (configurations) whose folds share one cross-validation split, predict each
fold's validation cases with that fold's network (softmax probabilities, cached), score every single model
and every softmax-average ensemble on Dice and the clinical measures, pick the best, decide its
postprocessing on the same predictions, and record it all in ``selection.json``
(:mod:`autocmr.selection.document`), which ``autocmr_predict --selection`` uses.

Modules: ``document`` (the versioned JSON, one reader/writer), ``cv_probabilities`` (fold predictions),
``find_best`` (scoring and choice), ``apply`` (predicting new images with a selection).
"""
