"""Short names of the wire enums (API.md section 1).

Every enum-valued option accepts the short name used by the CLI and the docs
(``"focal"``, ``"mean"``, ``"effective_number"``, ``"bf16"``), the enum value
name with or without its prefix (``"LOSS_TYPE_FOCAL"``, ``"FOCAL"``), or the
enum number. ``None`` always means "unset" (the dataset's default, then
LOSS.md's). Note that ``weighting="none"`` is the scheme NONE, not "unset".

The short names come from the enum descriptors of the generated stubs (value
name minus the enum's prefix, lower case), so a value added to the proto
needs no edit here.
"""

import functools

import numpy as np

from cbloss._proto import cbloss_pb2 as pb


def prefix_of(enum):
    """"LOSS_TYPE_" of LossType: the name of its zero value, LOSS_TYPE_UNSPECIFIED,
    minus "UNSPECIFIED" (every wire enum starts with such a value)."""
    unspecified = enum.values_by_number[0].name
    if not unspecified.endswith("_UNSPECIFIED"):
        raise ValueError("enum %s: value 0 is %s, not *_UNSPECIFIED"
                         % (enum.full_name, unspecified))
    return unspecified[:-len("UNSPECIFIED")]


@functools.lru_cache(maxsize=None)
def short_names(enum):
    """{short name: number} of an enum descriptor: each value's name minus the
    enum's prefix, lower case ("focal": 3), for every value but *_UNSPECIFIED."""
    prefix = prefix_of(enum)
    return {value.name[len(prefix):].lower(): value.number
            for value in enum.values if value.number != 0}


LOSS_TYPES = short_names(pb.LossType.DESCRIPTOR)
REDUCTIONS = short_names(pb.Reduction.DESCRIPTOR)
WEIGHTINGS = short_names(pb.WeightingScheme.DESCRIPTOR)
DTYPES = short_names(pb.DType.DESCRIPTOR)

_DTYPE_ALIASES = {
    "f32": "float32", "fp32": "float32", "float": "float32",
    "f16": "float16", "fp16": "float16", "half": "float16",
    "bf16": "bfloat16",
}


def number_of(enum, value, what):
    """The number of `value` in the enum descriptor `enum`: a short name, the
    value name with or without its prefix, or a number; None -> 0 (unset).
    `what` names the argument in the errors (ValueError, TypeError)."""
    if value is None:
        return 0
    table = short_names(enum)
    if isinstance(value, bool):
        raise TypeError("%s: expected a name or an enum number, got %r" % (what, value))
    if isinstance(value, int):
        if value == 0 or value in table.values():
            return value
        raise ValueError("%s: unknown enum number %d" % (what, value))
    if isinstance(value, str):
        prefix = prefix_of(enum).lower()
        key = value.strip().lower().replace("-", "_")
        if key.startswith(prefix):
            key = key[len(prefix):]
        if key in table:
            return table[key]
        raise ValueError("%s: unknown value %r; expected one of %s"
                         % (what, value, ", ".join(sorted(table))))
    raise TypeError("%s: expected a name or an enum number, got %r" % (what, value))


def name_of(enum, number):
    """Short name of `number` in the enum descriptor `enum`; None for 0
    (UNSPECIFIED) and for numbers it does not know."""
    if number == 0:
        return None
    for name, n in short_names(enum).items():
        if n == number:
            return name
    return None


def loss_type_number(value):
    """LossType number of `value` ("focal", "LOSS_TYPE_FOCAL", 3); None -> 0."""
    return number_of(pb.LossType.DESCRIPTOR, value, "loss_type")


def reduction_number(value):
    """Reduction number of `value` ("mean", "REDUCTION_NONE", ...); None -> 0."""
    return number_of(pb.Reduction.DESCRIPTOR, value, "reduction")


def weighting_number(value):
    """WeightingScheme number ("effective_number", "inverse_frequency",
    "inverse_sqrt_frequency", "none"); None -> 0."""
    return number_of(pb.WeightingScheme.DESCRIPTOR, value, "weighting")


def dtype_number(value):
    """DType number of a name ("bf16", "float16", "DTYPE_FLOAT32"), a numpy
    dtype or a torch dtype; None -> 0 (float32)."""
    if value is None:
        return 0
    if not isinstance(value, (str, int)):
        # torch dtypes print as "torch.bfloat16"; numpy dtypes have names.
        text = str(value)
        if text.startswith("torch."):
            value = text[len("torch."):]
        else:
            value = np.dtype(value).name
    if isinstance(value, str):
        key = value.strip().lower()
        value = _DTYPE_ALIASES.get(key, key)
    return number_of(pb.DType.DESCRIPTOR, value, "dtype")


def loss_type_name(number):
    """Short name of a LossType number ("focal"); None for UNSPECIFIED."""
    return name_of(pb.LossType.DESCRIPTOR, number)


def reduction_name(number):
    return name_of(pb.Reduction.DESCRIPTOR, number)


def weighting_name(number):
    return name_of(pb.WeightingScheme.DESCRIPTOR, number)


def dtype_name(number):
    """"float32", "float16" or "bfloat16" (UNSPECIFIED is float32)."""
    return name_of(pb.DType.DESCRIPTOR, number) or "float32"
