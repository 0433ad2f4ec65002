"""X2CT: reconstruct CT volumes from X-ray images (Slicer-free core)."""

__version__ = "0.1.0"
