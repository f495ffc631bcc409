"""Learning-rate schedules (as ``monai.optimizers``)."""

from .lr_scheduler import TimedOneCycleLR
