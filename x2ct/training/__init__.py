"""Training of every model in the zoo with its published schedule (see ``trainer`` and ``schedules``)."""

from x2ct.training.config import Config, from_dict, load, shipped_names

__all__ = ["Config", "Trainer", "from_dict", "load", "shipped_names", "train"]


def __getattr__(name: str):
    """``Trainer`` and ``train`` on first use: the trainer needs torch, configs do not (3D Slicer reads
    and writes configs before PyTorch is installed)."""
    if name in ("Trainer", "train"):
        from x2ct.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'x2ct.training' has no attribute {name!r}")
