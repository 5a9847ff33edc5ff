"""Training: data sampling, augmentation, loss, the training loop, checkpoints and fine-tuning."""
