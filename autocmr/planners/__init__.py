"""Dataset fingerprint and plans: what autocmr derives from the data before any training."""
