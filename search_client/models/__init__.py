"""Model registry: ``build_model(arch, num_classes, **kw)`` for every architecture of the client.

- ``bisenetv2``: the baseline (``head_mid=`` optional).
- ``supernet``: the RTSeg supernet (``config=`` a :class:`SupernetConfig` or its dict).
- ``subnet``: a plain network from ``spec=`` (a :class:`SubnetSpec`, its dict, its JSON text, or a
  path to a JSON file), e.g. written by ``search_client.search.derive.subnet_spec``.
- any name added with :func:`register_subnet` (a named subnet spec).

Every model follows one contract: in train mode ``model(x)`` returns ``{"out": (B,K,H,W), "aux":
[(B,K,H,W), ...]}``; in eval mode the main logits ``(B,K,H,W)`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from search_client.models.bisenetv2 import BiSeNetV2
from search_client.models.supernet import RTSegSupernet, SupernetConfig
from search_client.models.twobranch import SubnetSpec, TwoBranchNet, build_subnet

if TYPE_CHECKING:
    from search_client.config import RunConfig

__all__ = [
    "BiSeNetV2", "RTSegSupernet", "SubnetSpec", "SupernetConfig", "TwoBranchNet",
    "available_archs", "build_from_config", "build_model", "load_spec", "register_subnet",
]  # fmt: skip


def load_spec(spec: SubnetSpec | dict | str | Path) -> SubnetSpec:
    """A subnet spec from an object, a dict, JSON text or a JSON file path."""
    if isinstance(spec, SubnetSpec):
        return spec
    if isinstance(spec, dict):
        return SubnetSpec.model_validate(spec)
    text = str(spec)
    if isinstance(spec, Path) or not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"subnet spec file {path} does not exist")
        text = path.read_text()
    return SubnetSpec.model_validate_json(text)


def _subnet(num_classes: int = 19, spec: SubnetSpec | dict | str | Path | None = None) -> nn.Module:
    if spec is None:
        raise ValueError("arch 'subnet' needs spec= (a subnet spec dict, JSON text or JSON file)")
    loaded = load_spec(spec)
    if loaded.num_classes != num_classes:
        loaded = loaded.model_copy(update={"num_classes": num_classes})
    return build_subnet(loaded)


def _supernet(num_classes: int = 19, config: SupernetConfig | dict | None = None) -> nn.Module:
    if isinstance(config, dict):
        config = SupernetConfig.model_validate(config)
    return RTSegSupernet(num_classes, config)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "bisenetv2": lambda num_classes=19, **kw: BiSeNetV2(num_classes, **kw),
    "supernet": _supernet,
    "subnet": _subnet,
}


def register_subnet(name: str, spec: SubnetSpec | dict | str | Path) -> None:
    """Make a named subnet buildable with ``build_model(name)``."""
    if name in ("bisenetv2", "supernet", "subnet"):
        raise ValueError(f"{name!r} is a built-in architecture name")
    loaded = load_spec(spec)
    _REGISTRY[name] = lambda num_classes=loaded.num_classes: _subnet(num_classes, loaded)


def available_archs() -> list[str]:
    return sorted(_REGISTRY)


def build_model(arch: str, num_classes: int = 19, **kw: object) -> nn.Module:
    if arch not in _REGISTRY:
        raise ValueError(f"unknown arch {arch!r}; available: {', '.join(available_archs())}")
    return _REGISTRY[arch](num_classes=num_classes, **kw)


def build_from_config(cfg: RunConfig) -> nn.Module:
    """The network a run config names (its ``arch``, ``num_classes`` and ``model`` arguments): the
    supernet of a search run, the network of a training run."""
    return build_model(cfg.arch, cfg.num_classes, **cfg.model)
