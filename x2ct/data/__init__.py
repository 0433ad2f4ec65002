"""Training and evaluation data: preprocessing protocol, datasets, DRR view cache, pseudo-patient simulator.

- ``protocol``: HU CT -> normalised model input on the X2CT grid (and ``to_hu`` back);
- ``datasets``: torch datasets of (CT, views) from CT folders, DICOM trees, X2CT HDF5 files, the simulator;
- ``cache``: DRR views computed once per CT and kept on disk;
- ``simulate``: pseudo-patients from the real template chest CT, deterministic per seed.
"""

from x2ct.data.cache import ViewCache
from x2ct.data.datasets import CTFolderDataset, DicomTreeDataset, SimulatedDataset, X2CTHDF5Dataset, split_of
from x2ct.data.protocol import DURHAM, X2CT, Protocol, ProtocolState, get_protocol, to_hu
from x2ct.data.simulate import pseudo_patient, seeds

__all__ = ["CTFolderDataset", "DURHAM", "DicomTreeDataset", "Protocol", "ProtocolState", "SimulatedDataset",
           "ViewCache", "X2CT", "X2CTHDF5Dataset", "get_protocol", "pseudo_patient", "seeds", "split_of", "to_hu"]
