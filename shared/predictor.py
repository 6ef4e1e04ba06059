"""The latency predictor network (5 fully-connected layers with ReLU) and its file format.

The network maps encoded block features to milliseconds. With ``cost_affine`` its output is
physically shaped: a per-kind affine function of the log analytic costs (MACs, params, activation
elements: a block's time grows with the work and the memory it moves, at a rate of its own kind)
plus the MLP's correction, so that few measurements already give the right scale and slope and the
MLP only learns what the cost model misses. Standardization of the inputs and of the
target (log milliseconds) lives in buffers, so a saved predictor is self-contained: the server
writes it with :func:`dump_predictor`, the client rebuilds the identical module with
:func:`load_predictor` and gets identical numbers.

A served predictor may be a :class:`LatencyEnsemble`: several such networks, each trained on a
different part of the data, whose log-latencies are averaged. Averaging cancels much of what each
member got wrong on a few hundred training configs; it is called like one network and stays
differentiable for the search client's regularizer.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from shared.config import KINDS
from shared.encoding import DERIVED, FEATURE_NAMES, N_FEATURES, feature_spec

# 2: ``arch`` may carry ``cost_affine``; 3: ``arch`` may carry ``members`` (an ensemble).
# Files of every earlier version still load.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
COST_COLUMNS = tuple(FEATURE_NAMES.index(name) for name in DERIVED)
MAX_LOG_MS = 16.0  # ~2.5 hours: an absurd extrapolation stays a finite number (flagged by the server)


class LatencyMLP(nn.Module):
    def __init__(self, n_features: int = N_FEATURES, hidden: int = 256, n_layers: int = 5, cost_affine: bool = False):
        super().__init__()
        if n_layers < 2:
            raise ValueError("n_layers must be at least 2")
        dims = [n_features] + [hidden] * (n_layers - 1)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)
        self.cost_affine = cost_affine
        if cost_affine:
            self.affine = nn.Linear(n_features + len(KINDS) * len(COST_COLUMNS), 1)
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_std", torch.ones(n_features))
        self.register_buffer("y_mean", torch.zeros(()))  # of log(ms)
        self.register_buffer("y_std", torch.ones(()))

    def set_normalization(self, x: torch.Tensor, log_ms: torch.Tensor) -> None:
        """Standardize with the training set's statistics. A feature (near-)constant in training gets
        scale 1, not its ~0 spread: a value it never took must not be blown up to ~1e6 standard
        deviations (that made every prediction of a network with such a block infinite)."""
        std = x.std(0) if len(x) > 1 else torch.zeros(x.shape[1])
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(torch.where(std > 1e-3, std, torch.ones_like(std)))
        self.y_mean.copy_(log_ms.mean())
        self.y_std.copy_(log_ms.std().clamp_min(1e-6))

    def affine_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs of the affine part: the standardized features and, per kind, its standardized log
        costs (zero for the other kinds), so each kind gets its own slope on each cost."""
        z = (x - self.x_mean) / self.x_std
        onehot = x[:, : len(KINDS)]
        per_kind = onehot[:, :, None] * z[:, list(COST_COLUMNS)][:, None, :]
        return torch.cat([z, per_kind.flatten(1)], dim=1)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) raw features -> (N,) standardized log-latency (what training fits)."""
        out = self.net((x - self.x_mean) / self.x_std).squeeze(-1)
        if self.cost_affine:
            out = out + self.affine(self.affine_inputs(x)).squeeze(-1)
        return out

    def log_ms(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) raw features -> (N,) log milliseconds."""
        return self.forward_normalized(x) * self.y_std + self.y_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) raw features -> (N,) latency in milliseconds."""
        return torch.exp(self.log_ms(x).clamp(max=MAX_LOG_MS))

    def arch(self) -> dict:
        """The constructor's arguments (what a predictor file records to rebuild the module)."""
        return {"n_features": self.net[0].in_features, "hidden": self.net[0].out_features,
                "n_layers": sum(isinstance(m, nn.Linear) for m in self.net), "cost_affine": self.cost_affine}


class LatencyEnsemble(nn.Module):
    """Networks of one architecture whose predictions are averaged in log space (the geometric
    mean of their milliseconds): each member is trained on a different part of the data."""

    def __init__(self, members: Sequence[LatencyMLP]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def log_ms(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.log_ms(x) for m in self.members]).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) raw features -> (N,) latency in milliseconds."""
        return torch.exp(self.log_ms(x).clamp(max=MAX_LOG_MS))

    def arch(self) -> dict:
        return {**self.members[0].arch(), "members": len(self.members)}


Predictor = LatencyMLP | LatencyEnsemble


@dataclass
class PredictorFile:
    model: Predictor
    meta: dict = field(default_factory=dict)


def dump_predictor(model: Predictor, meta: dict | None = None) -> bytes:
    """Serialize weights + feature spec + version + free-form meta (device class, metrics...)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "feature_spec": feature_spec(),
        "arch": model.arch(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


class PredictorFormatError(ValueError):
    pass


def load_predictor(blob: bytes) -> PredictorFile:
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise PredictorFormatError(f"not a predictor file: {exc}") from exc
    if payload.get("format_version") not in READABLE_VERSIONS:
        raise PredictorFormatError(f"predictor format {payload.get('format_version')} is not one this client reads "
                                   f"({', '.join(map(str, READABLE_VERSIONS))}); update the client")
    if payload.get("feature_spec") != feature_spec():
        raise PredictorFormatError("predictor was trained with another feature encoding; update the client")
    arch = dict(payload["arch"])
    members = arch.pop("members", None)
    model = LatencyMLP(**arch) if members is None else LatencyEnsemble([LatencyMLP(**arch) for _ in range(members)])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return PredictorFile(model=model, meta=payload.get("meta", {}))
