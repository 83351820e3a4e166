"""Python views of the wire messages: LossConfig, Dataset, LossResult."""

import dataclasses
import datetime
from typing import List, Optional

import numpy as np

from cbloss import enums
from cbloss._proto import cbloss_pb2 as pb

# LossConfig fields that are proto3 `optional` scalars (unset != 0).
_OPTIONAL_SCALARS = ("beta", "gamma", "ignore_index", "tau", "max_margin", "scale",
                     "drw_start_epoch")


@dataclasses.dataclass
class LossConfig:
    """Loss parameters (the wire LossConfig). None means unset: the dataset's
    default applies, then LOSS.md's. Enum fields hold short names
    ("focal", "mean", "effective_number")."""

    loss_type: Optional[str] = None
    weighting: Optional[str] = None
    beta: Optional[float] = None
    gamma: Optional[float] = None
    reduction: Optional[str] = None
    ignore_index: Optional[int] = None
    tau: Optional[float] = None
    max_margin: Optional[float] = None
    scale: Optional[float] = None
    drw_start_epoch: Optional[int] = None

    def to_proto(self):
        """The wire LossConfig; enum names are checked here (ValueError)."""
        config = pb.LossConfig(
            loss_type=enums.loss_type_number(self.loss_type),
            weighting=enums.weighting_number(self.weighting),
            reduction=enums.reduction_number(self.reduction))
        for field in _OPTIONAL_SCALARS:
            value = getattr(self, field)
            if value is not None:
                setattr(config, field, value)
        return config

    @classmethod
    def from_proto(cls, config):
        values = {field: getattr(config, field) if config.HasField(field) else None
                  for field in _OPTIONAL_SCALARS}
        return cls(loss_type=enums.loss_type_name(config.loss_type),
                   weighting=enums.weighting_name(config.weighting),
                   reduction=enums.reduction_name(config.reduction), **values)


def _time(timestamp):
    if timestamp.seconds == 0 and timestamp.nanos == 0:
        return None
    return timestamp.ToDatetime(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass
class Dataset:
    """A stored dataset: class counts n_j, optional class names, the default
    loss configuration, and its version (1 on creation, +1 per change)."""

    name: str
    class_counts: List[int]
    class_names: List[str]
    defaults: LossConfig
    version: int
    create_time: Optional[datetime.datetime] = None
    update_time: Optional[datetime.datetime] = None

    @property
    def num_classes(self):
        return len(self.class_counts)

    @classmethod
    def from_proto(cls, dataset):
        return cls(name=dataset.name,
                   class_counts=list(dataset.class_counts),
                   class_names=list(dataset.class_names),
                   defaults=LossConfig.from_proto(dataset.defaults),
                   version=dataset.version,
                   create_time=_time(dataset.create_time),
                   update_time=_time(dataset.update_time))


@dataclasses.dataclass
class LossResult:
    """What ComputeLoss returned for one batch.

    Attributes:
      loss: the scalar L (for reduction "none": sum_i u_i * l_i).
      gradient: dL/dz as a numpy array [B, C], or None if not requested. Its
        dtype is float32, or float16 when gradient_dtype was float16; a
        bfloat16 gradient is returned as float32 holding the exact bfloat16
        values (numpy has no bfloat16; `gradient_tensor` keeps the raw bits).
      gradient_dtype: "float32", "float16" or "bfloat16" (the wire dtype).
      per_sample_losses: l_i as float32 [B], or None when not returned.
      class_weights: the weights w used, float64 [C].
      num_samples: N, the samples not ignored.
      resolved_config: the LossConfig actually used, every field set.
      dataset_version: version of the dataset used; 0 for inline counts.
      gradient_tensor: the wire Tensor of the gradient (raw bytes), or None.
    """

    loss: float
    gradient: Optional[np.ndarray]
    per_sample_losses: Optional[np.ndarray]
    class_weights: np.ndarray
    num_samples: int
    resolved_config: LossConfig
    dataset_version: int
    gradient_dtype: Optional[str] = None
    gradient_tensor: Optional[object] = dataclasses.field(default=None, repr=False)
