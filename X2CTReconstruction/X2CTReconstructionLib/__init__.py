"""Library of the X2CT Reconstruction module: scene glue, logic and offscreen rendering.

Nothing here imports ``qt`` or ``ctk``, so it runs inside 3D Slicer and
headless on the slicer-core package (tests, ``x2ct demo``).
"""
