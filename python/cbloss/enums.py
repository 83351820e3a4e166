"""Short names of the wire enums (API.md section 1).

Every enum-valued option accepts the short name used by the CLI and the docs
(``"focal"``, ``"mean"``, ``"effective_number"``, ``"bf16"``), the enum value
name with or without its prefix (``"LOSS_TYPE_FOCAL"``, ``"FOCAL"``), or the
enum number. ``None`` always means "unset" (the dataset's default, then
LOSS.md's). Note that ``weighting="none"`` is the scheme NONE, not "unset".
"""

import numpy as np

from cbloss._proto import cbloss_pb2 as pb


def _table(enum, prefix):
    """short name -> number, for every value but *_UNSPECIFIED."""
    table = {}
    for value in enum.DESCRIPTOR.values:
        if value.number == 0:
            continue
        table[value.name[len(prefix):].lower()] = value.number
    return table


LOSS_TYPES = _table(pb.LossType, "LOSS_TYPE_")
REDUCTIONS = _table(pb.Reduction, "REDUCTION_")
WEIGHTINGS = _table(pb.WeightingScheme, "WEIGHTING_SCHEME_")
DTYPES = _table(pb.DType, "DTYPE_")

_DTYPE_ALIASES = {
    "f32": "float32", "fp32": "float32", "float": "float32",
    "f16": "float16", "fp16": "float16", "half": "float16",
    "bf16": "bfloat16",
}


def _parse(value, table, prefix, what):
    if value is None:
        return 0
    if isinstance(value, bool):
        raise TypeError("%s: expected a name or an enum number, got %r" % (what, value))
    if isinstance(value, int):
        if value == 0 or value in table.values():
            return value
        raise ValueError("%s: unknown enum number %d" % (what, value))
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_")
        if key.startswith(prefix.lower()):
            key = key[len(prefix):]
        if key in table:
            return table[key]
        raise ValueError("%s: unknown value %r; expected one of %s"
                         % (what, value, ", ".join(sorted(table))))
    raise TypeError("%s: expected a name or an enum number, got %r" % (what, value))


def loss_type_number(value):
    """LossType number of `value` ("focal", "LOSS_TYPE_FOCAL", 3); None -> 0."""
    return _parse(value, LOSS_TYPES, "LOSS_TYPE_", "loss_type")


def reduction_number(value):
    """Reduction number of `value` ("mean", "REDUCTION_NONE", ...); None -> 0."""
    return _parse(value, REDUCTIONS, "REDUCTION_", "reduction")


def weighting_number(value):
    """WeightingScheme number ("effective_number", "inverse_frequency",
    "inverse_sqrt_frequency", "none"); None -> 0."""
    return _parse(value, WEIGHTINGS, "WEIGHTING_SCHEME_", "weighting")


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
    return _parse(value, DTYPES, "DTYPE_", "dtype")


def _name_of(table, number):
    if number == 0:
        return None
    for name, n in table.items():
        if n == number:
            return name
    return None


def loss_type_name(number):
    """Short name of a LossType number ("focal"); None for UNSPECIFIED."""
    return _name_of(LOSS_TYPES, number)


def reduction_name(number):
    return _name_of(REDUCTIONS, number)


def weighting_name(number):
    return _name_of(WEIGHTINGS, number)


def dtype_name(number):
    """"float32", "float16" or "bfloat16" (UNSPECIFIED is float32)."""
    return _name_of(DTYPES, number) or "float32"
