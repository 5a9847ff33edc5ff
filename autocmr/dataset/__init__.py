"""Raw datasets: the nnU-Net v2 raw format, per-case metadata, converters and integrity checks."""
