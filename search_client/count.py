"""Params and GMACs of an architecture the way the paper's Table 1 counts them.

The eval-mode inference graph (aux heads not run) is traced under torch's ``FlopCounterMode``;
MACs = flops / 2. Params are those of the modules that graph uses: aux heads and search-only
parameters (architecture logits, gate weights) are excluded. The supernet is counted in its
``full`` mode (every mixed block runs LIR and MHSA; see ``search_client.models.supernet``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search_client.models import available_archs, build_model
from search_client.models.channel_gate import ChannelGate

_EXCLUDED = ("aux_heads.", "arch_logits")


def inference_params(model: nn.Module) -> int:
    """Parameters of the inference graph: no aux heads, no architecture logits, no gates."""
    gate_ids = {id(m.weight) for m in model.modules() if isinstance(m, ChannelGate)}
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if id(p) not in gate_ids and not any(tag in name for tag in _EXCLUDED)
    )


def inference_macs(model: nn.Module, height: int, width: int) -> int:
    """MACs of one eval-mode forward of a (1, 3, height, width) input on the model's device
    (a model on the ``meta`` device is counted from shapes alone, without computing)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, height, width, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def count_module(model: nn.Module, height: int, width: int) -> dict[str, float]:
    return {"params_m": inference_params(model) / 1e6, "gmacs": inference_macs(model, height, width) / 1e9}


def count_model(arch: str, height: int, width: int, num_classes: int = 19, **kw: object) -> dict[str, float]:
    """``{"params_m", "gmacs"}`` of a registered architecture at ``height x width``.

    The model is built on the ``meta`` device: counting needs shapes only, so 512x1024 is instant.
    """
    with torch.device("meta"):
        model = build_model(arch, num_classes, **kw)
    return count_module(model, height, width)


def smallest_spec(num_classes: int = 19, config: dict | None = None) -> dict:
    """Spec of the smallest network the supernet can derive: every mixed block skipped and every
    DWBC gate at its floor (the default gates of ``RTSegSupernet.install_gates``)."""
    from search_client.search.derive import subnet_spec

    supernet = build_model("supernet", num_classes, **({"config": config} if config else {}))
    gates = supernet.install_gates()
    with torch.no_grad():
        for gate in gates:
            gate.weight.zero_()  # below the threshold: each gate keeps its floor
    supernet.set_active(["skip"] * len(supernet.mixed_blocks()))
    return subnet_spec(supernet.eval())


def count_main(argv: Sequence[str] | None = None) -> int:
    """``rtseg-search count --arch NAME --height H --width W [--classes K] [--spec FILE] [--smallest]
    [--json]``."""
    parser = argparse.ArgumentParser(prog="rtseg-search count", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, help=f"one of: {', '.join(available_archs())}")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--spec", help="subnet spec JSON file (for --arch subnet)")
    parser.add_argument(
        "--smallest", action="store_true",
        help="with --arch supernet: the smallest derivable network (every mixed block skipped, every gate at its floor)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.smallest and args.arch != "supernet":
        print(f"error: --smallest counts a supernet's smallest subnet; use --arch supernet, not {args.arch!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    kw = {"spec": args.spec} if args.spec else {}
    try:
        if args.smallest:
            counts = count_model("subnet", args.height, args.width, args.classes,
                                 spec=smallest_spec(args.classes))  # fmt: skip
        else:
            counts = count_model(args.arch, args.height, args.width, args.classes, **kw)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {"arch": args.arch, "smallest": args.smallest, "height": args.height, "width": args.width, **counts}
    if args.json:
        print(json.dumps(counts))
    else:
        print(
            f"{args.arch} @ {args.height}x{args.width}: {counts['params_m']:.2f} M params, {counts['gmacs']:.2f} GMACs"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(count_main())
