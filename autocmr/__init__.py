"""autocmr: self-configuring deep-learning segmentation of cardiac MR.

Importing the package is cheap and side-effect free: no environment variable is needed and nothing is
printed. Heavy modules (torch, SimpleITK) are imported by the sub-packages that use them.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("autocmr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
