"""The segmentation network (a plain U-Net built from the plans' topology)."""
from autocmr.networks.unet import GenericUNet, build_network

__all__ = ["GenericUNet", "build_network"]
