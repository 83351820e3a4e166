"""Python views of the wire messages: LossConfig, Dataset, Run, LossResult."""

import dataclasses
import datetime
from typing import List, Optional

import numpy as np
from google.protobuf.descriptor import FieldDescriptor as _FIELD

from cbloss import enums
from cbloss._proto import cbloss_pb2 as pb

_PYTHON_TYPES = {
    _FIELD.CPPTYPE_DOUBLE: float, _FIELD.CPPTYPE_FLOAT: float,
    _FIELD.CPPTYPE_INT32: int, _FIELD.CPPTYPE_INT64: int,
    _FIELD.CPPTYPE_UINT32: int, _FIELD.CPPTYPE_UINT64: int,
    _FIELD.CPPTYPE_BOOL: bool, _FIELD.CPPTYPE_STRING: str,
    _FIELD.CPPTYPE_ENUM: str,  # the short name (cbloss.enums)
}

# The wire LossConfig's fields, in proto order: every one is a LossConfig
# attribute and a keyword of the calls that take loss parameters.
LOSS_CONFIG_FIELDS = tuple(pb.LossConfig.DESCRIPTOR.fields)
LOSS_PARAMETERS = tuple(field.name for field in LOSS_CONFIG_FIELDS)


def _to_proto(self):
    """The wire LossConfig; enum names are checked here (ValueError)."""
    config = pb.LossConfig()
    # The enum names first, then the scalars (the order the errors come in).
    for field in LOSS_CONFIG_FIELDS:
        if field.enum_type is not None:
            number = enums.number_of(field.enum_type, getattr(self, field.name), field.name)
            setattr(config, field.name, number)
    for field in LOSS_CONFIG_FIELDS:
        value = getattr(self, field.name)
        if field.enum_type is None and value is not None:
            setattr(config, field.name, value)
    return config


def _from_proto(cls, config):
    values = {}
    for field in LOSS_CONFIG_FIELDS:
        value = getattr(config, field.name)
        if field.enum_type is not None:
            values[field.name] = enums.name_of(field.enum_type, value)
        elif field.has_presence:
            values[field.name] = value if config.HasField(field.name) else None
        else:
            values[field.name] = value
    return cls(**values)


LossConfig = dataclasses.make_dataclass(
    "LossConfig",
    [(field.name, Optional[_PYTHON_TYPES[field.cpp_type]], None)
     for field in LOSS_CONFIG_FIELDS],
    namespace={"to_proto": _to_proto, "from_proto": classmethod(_from_proto)})
LossConfig.__module__ = __name__
LossConfig.__doc__ = """Loss parameters (the wire LossConfig). None means unset: the dataset's
    default applies, then LOSS.md's. Enum fields hold short names
    ("focal", "mean", "effective_number").

    The attributes are the fields of the proto LossConfig, in its order
    (loss_type, weighting, beta, gamma, reduction, ignore_index, tau,
    max_margin, scale, drw_start_epoch, ...), derived from its descriptor."""


def check_enum_names(params):
    """Raises ValueError / TypeError, as to_proto would, for an enum-valued
    entry of `params` (a {field name: value} dict) that names no value."""
    for field in LOSS_CONFIG_FIELDS:
        if field.enum_type is not None and field.name in params:
            enums.number_of(field.enum_type, params[field.name], field.name)


def check_loss_keywords(function, params):
    """Raises TypeError, as Python would for `function` (its name), for a key
    of `params` that is not a LossConfig field."""
    for name in params:
        if name not in LOSS_PARAMETERS:
            raise TypeError("%s() got an unexpected keyword argument %r" % (function, name))


def merged_config(base, params):
    """The LossConfig `base` (None: an empty one) overridden by the entries of
    `params` ({field name: value}) that are not None."""
    if base is None:
        base = LossConfig()
    elif not isinstance(base, LossConfig):
        raise TypeError("config must be a cbloss.LossConfig, got %r" % type(base))
    return dataclasses.replace(base, **{k: v for k, v in params.items() if v is not None})


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
class RunStatistics:
    """What a run has accumulated (LOSS.md section 11).

    Attributes:
      seen_counts: foreground labels of each class (not ignored) in the
        accumulating requests applied so far; C ints.
      background_seen: background labels (label C of SEESAW, EQL, EQL_V2).
      positive_gradient, negative_gradient: EQL_V2's P_j and Q_j (LOSS.md
        section 10), float64 numpy arrays [C].
      eqlv2_updates: how many accumulating EQL_V2 requests changed P and Q.
    """

    seen_counts: List[int]
    background_seen: int
    positive_gradient: np.ndarray
    negative_gradient: np.ndarray
    eqlv2_updates: int

    @classmethod
    def from_proto(cls, statistics):
        return cls(seen_counts=list(statistics.seen_counts),
                   background_seen=int(statistics.background_seen),
                   positive_gradient=np.asarray(statistics.positive_gradient, dtype=np.float64),
                   negative_gradient=np.asarray(statistics.negative_gradient, dtype=np.float64),
                   eqlv2_updates=int(statistics.eqlv2_updates))


@dataclasses.dataclass
class Run:
    """A training run's online statistics (LOSS.md section 11), shared by
    every worker that names it: its dataset (None if it has none), its class
    count C, its loss defaults (over the dataset's), the statistics, and its
    version (1 on creation, +1 per accumulating request applied)."""

    name: str
    dataset: Optional[str]
    num_classes: int
    defaults: LossConfig
    statistics: RunStatistics
    version: int
    create_time: Optional[datetime.datetime] = None
    update_time: Optional[datetime.datetime] = None

    @classmethod
    def from_proto(cls, run):
        return cls(name=run.name,
                   dataset=run.dataset or None,
                   num_classes=run.num_classes,
                   defaults=LossConfig.from_proto(run.defaults),
                   statistics=RunStatistics.from_proto(run.statistics),
                   version=run.version,
                   create_time=_time(run.create_time),
                   update_time=_time(run.update_time))


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
      run_version: with a run, the run's version after this request
        (including its own update when it accumulated); 0 without a run.
      shared_memory: True if `gradient` is a view of the client's (or
        module's) shared-memory region: valid until its next call; copy it
        to keep it.
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
    run_version: int = 0
    shared_memory: bool = False


@dataclasses.dataclass
class SharedMemoryRegion:
    """A registered shared-memory region (API.md section 5.3): `byte_size`
    bytes from `offset` of the POSIX shared-memory object `key`."""

    name: str
    key: str
    offset: int
    byte_size: int

    @classmethod
    def from_proto(cls, region):
        return cls(name=region.name, key=region.key, offset=int(region.offset),
                   byte_size=int(region.byte_size))
