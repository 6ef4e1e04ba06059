"""Block configurations: the unit that is sampled, profiled, predicted and trained.

One pydantic model per block kind, discriminated on ``kind``. ``h``/``w`` are always the spatial
size of the (first) input; batch 1, float32, NCHW. ``BlockConfig`` is the union; parse untrusted
JSON with :func:`parse_block`.

Block definitions are versioned. A kind whose module changed carries a ``definition`` field (its
current number is the default and the only value accepted), so it is part of the dump, of
:meth:`key` and of every stored config: a measurement of an older form (stored with its older
number) never parses as the current block, and :func:`is_current_definition` lets stored rows of an
older form be skipped. LIR and down are at definition 2, the form of the paper's Fig. 2 with the
leading 3x3 conv (definition 1 had none, and its down block one depthwise conv fewer).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

MAX_CHANNELS = 4096
MAX_SIZE = 2048
MAX_HEADS = 64

Channels = Annotated[int, Field(ge=1, le=MAX_CHANNELS, description="channel count")]
Size = Annotated[int, Field(ge=1, le=MAX_SIZE, description="feature map size (pixels)")]


def kind_required_on_wire(schema: dict) -> None:
    # ``kind`` has a default for Python callers, but on the wire it is the union's tag: required.
    if "kind" in schema.get("properties", {}):
        schema["required"] = ["kind", *[n for n in schema.get("required", []) if n != "kind"]]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=kind_required_on_wire)

    h: Size
    w: Size

    @property
    def out_channels(self) -> int:
        return self.cout  # type: ignore[attr-defined]

    def out_size(self) -> tuple[int, int]:
        return self.h, self.w

    def key(self) -> str:
        """Stable content hash of the config (used for dedup and held-out splits)."""
        blob = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _strided(size: int, stride: int) -> int:
    # conv with padding k//2: out = ceil(size / stride)
    return (size + stride - 1) // stride


class ConvConfig(_Block):
    """3x3 (or kxk) conv + BN + ReLU: detail branch and stem layers."""

    kind: Literal["conv"] = "conv"
    cin: Channels
    cout: Channels
    # Allowed values as enums, so that the wire schema states them (and validation stays in Rust).
    kernel: Literal[1, 3, 5, 7, 9, 11] = Field(3, description="odd kernel size")
    stride: Literal[1, 2] = 1

    def out_size(self) -> tuple[int, int]:
        return _strided(self.h, self.stride), _strided(self.w, self.stride)


class _Defined(BaseModel):
    """A kind with a versioned definition and a leading 3x3 conv whose width is ``clead``."""

    DEFINITION: ClassVar[int] = 2
    definition: int = Field(2, description="version of the block's definition (its module's structure)")
    clead: Channels = Field(0, description="output channels of the leading 3x3 conv (default: cin)")

    @model_validator(mode="before")
    @classmethod
    def _lead_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("clead") is None and "cin" in data:
            data = {**data, "clead": data["cin"]}
        return data

    @field_validator("definition")
    @classmethod
    def _current(cls, v: int) -> int:
        if v != cls.DEFINITION:
            raise ValueError(
                f"definition {v} is an older form of this block (current: {cls.DEFINITION}); "
                "it is no longer built, so measure the current block instead"
            )
        return v


class LIRConfig(_Defined, ConvConfig):
    """Lightweight inverted residual (paper Fig. 2b): 3x3 conv (s1, cin -> clead) -> 1x1 expand
    (cmid) -> kxk depthwise (stride) -> 1x1 project (cout), identity residual when shapes allow."""

    kind: Literal["lir"] = "lir"  # type: ignore[assignment]
    cmid: Channels

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


class DownConfig(_Defined, _Block):
    """Segment-branch downsample block (stride 2, paper Fig. 2a): 3x3 conv (s1, cin -> clead) ->
    1x1 (cmid) -> 3x3 depthwise s2 -> 3x3 depthwise s1 -> 1x1 (cout); shortcut 3x3 depthwise s2 ->
    1x1 (cout); add."""

    kind: Literal["down"] = "down"
    cin: Channels
    cmid: Channels
    cout: Channels

    def out_size(self) -> tuple[int, int]:
        return _strided(self.h, 2), _strided(self.w, 2)


class MHSAConfig(_Block):
    """Patchify -> LayerNorm -> multi-head self-attention -> MLP (hidden cmid) -> de-patch."""

    kind: Literal["mhsa"] = "mhsa"
    cin: Channels
    heads: int = Field(ge=1, le=MAX_HEADS)
    patch: int = Field(ge=1, le=16)
    cmid: Channels

    @property
    def cout(self) -> int:
        return self.cin

    @model_validator(mode="after")
    def _divisibility(self) -> MHSAConfig:
        if self.cin % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide cin ({self.cin})")
        if self.h % self.patch or self.w % self.patch:
            raise ValueError(f"patch ({self.patch}) must divide h ({self.h}) and w ({self.w})")
        return self


class StemConfig(_Block):
    """BiSeNetV2 stem: to H/4 (3x3 s2 to cmid, then a 1x1 (clead) -> 3x3 s2 (cmid) branch and a
    max-pool branch, concatenated, 3x3 fuse to cout). ``cmid`` defaults to cout, ``clead`` to
    cmid // 2 (the BiSeNetV2 stem)."""

    kind: Literal["stem"] = "stem"
    cin: Channels = 3
    cout: Channels
    cmid: Channels = Field(0, description="first conv's and left 3x3's width (default: cout)")
    clead: Channels = Field(0, description="left branch 1x1 width (default: cmid // 2)")

    @model_validator(mode="before")
    @classmethod
    def _inner_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cout" in data:
            data = dict(data)
            if data.get("cmid") is None:
                data["cmid"] = data["cout"]
            if data.get("clead") is None and isinstance(data["cmid"], int):
                data["clead"] = max(1, data["cmid"] // 2)
        return data

    def out_size(self) -> tuple[int, int]:
        return _strided(_strided(self.h, 2), 2), _strided(_strided(self.w, 2), 2)


class ContextConfig(_Block):
    """Context embedding: global average pool -> BN -> 1x1 -> broadcast add -> 3x3."""

    kind: Literal["context"] = "context"
    cin: Channels

    @property
    def cout(self) -> int:
        return self.cin


class BGAConfig(_Block):
    """Bilateral guided aggregation. ``h``/``w`` are the detail input's size; the semantic input
    has the same channels at ``h/4 x w/4``."""

    kind: Literal["bga"] = "bga"
    cin: Channels

    @property
    def cout(self) -> int:
        return self.cin

    @model_validator(mode="after")
    def _quarter(self) -> BGAConfig:
        if self.h % 4 or self.w % 4:
            raise ValueError(f"bga needs h ({self.h}) and w ({self.w}) divisible by 4")
        return self


class HeadConfig(_Block):
    """Segmentation head: 3x3 conv-BN-ReLU (cmid) -> 1x1 to classes -> bilinear upsample x scale."""

    kind: Literal["head"] = "head"
    cin: Channels
    cmid: Channels
    classes: int = Field(ge=1, le=1024)
    scale: int = Field(1, ge=1, le=32)

    @property
    def cout(self) -> int:
        return self.classes

    def out_size(self) -> tuple[int, int]:
        return self.h * self.scale, self.w * self.scale


BlockConfig = Annotated[
    ConvConfig | LIRConfig | DownConfig | MHSAConfig | StemConfig | ContextConfig | BGAConfig | HeadConfig,
    Field(discriminator="kind"),
]
KINDS: tuple[str, ...] = ("conv", "lir", "down", "mhsa", "stem", "context", "bga", "head")
CONFIG_CLASSES: dict[str, type[_Block]] = {
    "conv": ConvConfig,
    "lir": LIRConfig,
    "down": DownConfig,
    "mhsa": MHSAConfig,
    "stem": StemConfig,
    "context": ContextConfig,
    "bga": BGAConfig,
    "head": HeadConfig,
}
_ADAPTER: TypeAdapter = TypeAdapter(BlockConfig)
_LIST_ADAPTER: TypeAdapter = TypeAdapter(list[BlockConfig])


def parse_block(data: dict | str) -> _Block:
    """Validate a block config from a dict or JSON text; raises pydantic.ValidationError."""
    if isinstance(data, str | bytes):
        return _ADAPTER.validate_json(data)
    return _ADAPTER.validate_python(data)


def parse_blocks(data: list) -> list[_Block]:
    return _LIST_ADAPTER.validate_python(data)


def definition_of(kind: str) -> int:
    """The current definition number of a kind (1 for kinds never redefined)."""
    cls = CONFIG_CLASSES.get(kind)
    return getattr(cls, "DEFINITION", 1) if cls is not None else 1


def is_current_definition(data: dict) -> bool:
    """Whether a stored config dict describes the current form of its block kind (a dict without
    a ``definition`` field is of definition 1)."""
    return int(data.get("definition", 1)) == definition_of(str(data.get("kind")))


AnyBlock = _Block
