"""Synthetic data for tests, the quick-start demo and benchmarks."""
from autocmr.testing.phantoms import (
    PhantomCase,
    make_phantom_case,
    make_phantom_cine,
    make_phantom_subject,
    write_phantom_dataset,
)

__all__ = ["PhantomCase", "make_phantom_case", "make_phantom_cine", "make_phantom_subject",
           "write_phantom_dataset"]
