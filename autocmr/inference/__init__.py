"""Inference: sliding-window prediction, fold ensembling, export to native space, postprocessing."""
