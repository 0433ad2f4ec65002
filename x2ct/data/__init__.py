"""Training and evaluation data: preprocessing protocol, datasets, DRR view cache, pseudo-patient simulator.

- ``protocol``: HU CT -> normalised model input on the X2CT grid (and ``to_hu`` back);
- ``datasets``: torch datasets of (CT, views) from CT folders, DICOM trees, X2CT HDF5 files, the simulator;
- ``cache``: DRR views computed once per CT and kept on disk;
- ``simulate``: pseudo-patients from the real template chest CT, deterministic per seed.

Import the module you need (``from x2ct.data import protocol``): the package
imports none of them, so a reconstruction, which needs only ``protocol``,
does not pay for the simulator's and the datasets' imports.
"""
