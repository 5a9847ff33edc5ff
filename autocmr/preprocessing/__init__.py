"""Cropping, normalisation, resampling and storage of training cases (and of images at inference)."""
