"""Library of the X2CT Training module (no ``qt``: runs inside 3D Slicer and headless)."""
