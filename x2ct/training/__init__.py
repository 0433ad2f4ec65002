"""Training of every model in the zoo with its published schedule (see ``trainer`` and ``schedules``)."""

from x2ct.training.config import Config, from_dict, load, shipped_names
from x2ct.training.trainer import Trainer, train

__all__ = ["Config", "Trainer", "from_dict", "load", "shipped_names", "train"]
