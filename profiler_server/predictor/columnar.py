"""A ``POST /v1/predict`` body whose blocks are validated as columns, not one pydantic model each.

Validating a 10,000-block body with ``PredictRequest`` took about 26 µs a block (the LIR/down and
MHSA/BGA validators run in Python), more than the whole target for the batch. Here msgspec
decodes the body straight into typed per-kind structs (bounds, enums, unknown fields and the
``kind`` tag checked in C), the blocks are grouped by kind into int64 columns, and the pydantic
models' own validators (computed defaults, divisibility) are applied to whole columns at once.

The pydantic models stay the reference: the structs are generated from their fields (bounds,
enums and defaults read from ``model_fields``), the fields around ``blocks`` are validated by a
``PredictRequest`` subclass, and this path only ever *accepts*: anything it cannot vouch for (a
lax value pydantic would coerce, such as ``3.0`` or ``true``; an error of any kind; a kind whose
validators are not mirrored here) makes :func:`decode_body` return ``None`` or
:func:`block_columns` raise ``NotValidAsSent``, and the caller validates the body with
``PredictRequest``, which gives the answer or the exact 422. A test checks, through
:func:`parse_columns` (both steps), that every body accepted here is accepted by pydantic with
the same values.

A predictor version remembers answers by the decoded structs (``service.Loaded.predict_decoded``):
a block seen before was validated then, so only new blocks are grouped into columns.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import msgspec
import numpy as np
from pydantic import BaseModel, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from shared.config import CONFIG_CLASSES, KINDS
from shared.schemas import PredictRequest

# The validators of each config class that this module applies to columns (``_complete`` and
# ``_valid``). A class with any other validator is left to pydantic, so a validator added to a
# model can make the fast path slower but never wrong (tests/.../test_columnar.py names them).
MIRRORED_VALIDATORS: dict[str, frozenset[str]] = {
    "conv": frozenset(),
    "lir": frozenset({"_current", "_lead_default"}),
    "down": frozenset({"_current", "_lead_default"}),
    "mhsa": frozenset({"_divisibility"}),
    "stem": frozenset({"_inner_defaults"}),
    "context": frozenset(),
    "bga": frozenset({"_quarter"}),
    "head": frozenset(),
}
ABSENT = 0  # a computed default not sent (0 is below every field's lower bound, so never sent)


@dataclass(frozen=True)
class KindColumns:
    """The blocks of one kind: where they sit in the request and their field values."""

    kind: str
    index: np.ndarray  # (n,) int64 positions in the request
    names: tuple[str, ...]  # the config class's fields in declaration order, ``kind`` left out
    values: np.ndarray  # (n, len(names)) int64, computed defaults filled in

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]


@dataclass(frozen=True)
class DecodedRequest:
    """A predict body decoded as sent: its fields other than ``blocks`` (a ``PredictRequest``
    with an empty block list) and its blocks as typed, hashable structs whose fields are checked
    (bounds, enums, unknown fields, the tag) but not yet the validators that span fields."""

    envelope: BaseModel
    blocks: list


@dataclass(frozen=True)
class ColumnarRequest:
    """A validated predict body: its envelope and its blocks as columns, one group per kind."""

    envelope: BaseModel
    n_blocks: int
    groups: tuple[KindColumns, ...]


class NotValidAsSent(ValueError):
    """Blocks that only the pydantic models can judge (invalid, or valid after a lax coercion)."""


def _validators(cls: type[BaseModel]) -> frozenset[str]:
    decorators = cls.__pydantic_decorators__
    return frozenset(decorators.field_validators) | frozenset(decorators.model_validators)


def _bounds(info: FieldInfo) -> dict[str, int]:
    """The field's ``ge``/``le`` constraints as msgspec ``Meta`` arguments."""
    out = {}
    for item in info.metadata:
        for name in ("ge", "le", "gt", "lt"):
            if getattr(item, name, None) is not None:
                out[name] = getattr(item, name)
    return out


def _struct_field(cls: type[BaseModel], name: str, info: FieldInfo) -> tuple:
    if name == "definition":  # ``_current``: only the current definition is accepted
        return name, Literal[cls.DEFINITION], cls.DEFINITION  # type: ignore[attr-defined]
    annotation = info.annotation if info.annotation is not int else Annotated[int, msgspec.Meta(**_bounds(info))]
    if info.is_required():
        return name, annotation, msgspec.NODEFAULT
    bounds = _bounds(info)
    if "ge" in bounds and info.default < bounds["ge"]:  # a default a before-validator computes
        return name, annotation, ABSENT
    return name, annotation, info.default


def _block_struct(kind: str) -> type[msgspec.Struct]:
    cls = CONFIG_CLASSES[kind]
    fields = [_struct_field(cls, n, f) for n, f in cls.model_fields.items() if n != "kind"]
    # gc=False: instances hold only ints, so the garbage collector need not track 10,000 of them;
    # frozen: hashable and compared field by field in C, so a predictor remembers answers by them
    return msgspec.defstruct(f"{cls.__name__}Columns", fields, kw_only=True, tag_field="kind", tag=kind,
                             forbid_unknown_fields=True, gc=False, frozen=True)  # fmt: skip


FAST_KINDS = tuple(k for k in KINDS if _validators(CONFIG_CLASSES[k]) == MIRRORED_VALIDATORS.get(k))
STRUCTS = {kind: _block_struct(kind) for kind in FAST_KINDS}
_KIND_OF = {struct: i for i, struct in enumerate(STRUCTS.values())}
_FIELDS = {kind: tuple(n for n in CONFIG_CLASSES[kind].model_fields if n != "kind") for kind in FAST_KINDS}
_GETTERS = {kind: operator.attrgetter(*names) for kind, names in _FIELDS.items()}
_BOUNDS = PredictRequest.model_fields["blocks"].metadata  # MinLen / MaxLen of the block list
_MIN_BLOCKS = next(m.min_length for m in _BOUNDS if hasattr(m, "min_length"))
_MAX_BLOCKS = next(m.max_length for m in _BOUNDS if hasattr(m, "max_length"))

# Every field of PredictRequest but ``blocks`` is kept as raw JSON and validated by pydantic.
_ENVELOPE_FIELDS = tuple(n for n in PredictRequest.model_fields if n != "blocks")
_Body = msgspec.defstruct(
    "PredictBodyColumns",
    [("blocks", list[Union[tuple(STRUCTS.values())]])]  # noqa: UP007 (a union built from a tuple)
    + [(n, msgspec.Raw, msgspec.Raw()) for n in _ENVELOPE_FIELDS],
    kw_only=True, forbid_unknown_fields=True,
)  # fmt: skip
Envelope = create_model(
    "PredictEnvelope", __base__=PredictRequest, blocks=(list[Any], Field(default_factory=list, max_length=0))
)
_DECODER = msgspec.json.Decoder(_Body)


def _envelope(body: Any) -> BaseModel | None:
    """The fields around ``blocks``, validated by pydantic from their own JSON."""
    parts = [b'"%s":%s' % (name.encode(), bytes(raw)) for name in _ENVELOPE_FIELDS if len(raw := getattr(body, name))]
    try:
        return Envelope.model_validate_json(b"{" + b",".join(parts) + b"}")
    except ValidationError:
        return None


def _complete(kind: str, columns: KindColumns) -> None:
    """Computed defaults, as the models' before-validators set them (in place)."""
    if kind in ("lir", "down"):  # _lead_default: clead defaults to cin
        clead = columns.column("clead")
        np.copyto(clead, columns.column("cin"), where=clead == ABSENT)
    elif kind == "stem":  # _inner_defaults: cmid defaults to cout, clead to max(1, cmid // 2)
        cmid, clead = columns.column("cmid"), columns.column("clead")
        np.copyto(cmid, columns.column("cout"), where=cmid == ABSENT)
        np.copyto(clead, np.maximum(1, cmid // 2), where=clead == ABSENT)


def _valid(kind: str, columns: KindColumns) -> bool:
    """The models' after-validators on whole columns."""
    h, w = columns.column("h"), columns.column("w")
    if kind == "mhsa":  # _divisibility
        patch = columns.column("patch")
        return not ((columns.column("cin") % columns.column("heads")).any() or (h % patch).any() or (w % patch).any())
    if kind == "bga":  # _quarter
        return not ((h % 4).any() or (w % 4).any())
    return True


def _group(blocks: list) -> list[KindColumns]:
    """Blocks grouped by kind (stable), each group's fields as one int64 matrix."""
    n = len(blocks)
    codes = np.fromiter(map(_KIND_OF.__getitem__, map(type, blocks)), dtype=np.int64, count=n)
    order = np.argsort(codes, kind="stable")
    ordered = operator.itemgetter(*order.tolist())(blocks) if n > 1 else tuple(blocks)
    ends = np.cumsum(np.bincount(codes, minlength=len(STRUCTS))).tolist()
    groups, lo = [], 0
    for kind, hi in zip(STRUCTS, ends, strict=True):
        if hi > lo:
            width = len(_FIELDS[kind])  # every kind has several fields: the getter gives tuples
            flat = itertools.chain.from_iterable(map(_GETTERS[kind], ordered[lo:hi]))
            values = np.fromiter(flat, dtype=np.int64, count=(hi - lo) * width).reshape(hi - lo, width)
            groups.append(KindColumns(kind, order[lo:hi], _FIELDS[kind], values))
        lo = hi
    return groups


def decode_body(raw: bytes) -> DecodedRequest | None:
    """The body decoded into structs, or ``None`` when some part of it is not valid as sent
    (validate it with ``PredictRequest`` then: it gives the answer or the 422)."""
    try:
        body = _DECODER.decode(raw)
    except msgspec.MsgspecError:
        return None
    if not _MIN_BLOCKS <= len(body.blocks) <= _MAX_BLOCKS:
        return None
    envelope = _envelope(body)
    return None if envelope is None else DecodedRequest(envelope, body.blocks)


def block_columns(blocks: list) -> list[KindColumns]:
    """Decoded blocks as columns with the models' validators applied; ``NotValidAsSent`` when one
    of them fails (a cross-field rule such as MHSA's divisibility)."""
    groups = _group(blocks)
    for columns in groups:
        _complete(columns.kind, columns)
        if not _valid(columns.kind, columns):
            raise NotValidAsSent(f"a {columns.kind} block breaks one of its model's validators")
    return groups


def parse_columns(raw: bytes) -> ColumnarRequest | None:
    """The body as columns when every part of it is valid as sent, else ``None``."""
    decoded = decode_body(raw)
    if decoded is None:
        return None
    try:
        groups = block_columns(decoded.blocks)
    except NotValidAsSent:
        return None
    return ColumnarRequest(envelope=decoded.envelope, n_blocks=len(decoded.blocks), groups=tuple(groups))
