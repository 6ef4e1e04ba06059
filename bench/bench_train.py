"""Training benchmarks of the search client.

1. Throughput (images/s) of one training step (forward, OHEM main + aux losses, backward, SGD) of
   bisenetv2 and supernet at 512x1024, batch 2 (CPU here; ``--device cuda`` with AMP on a GPU).
2. On synthetic street scenes at 256x512: mIoU of the supernet after the ``synthetic-cpu`` budget
   next to the same network untrained.

Writes ``runs/bench/train.json`` and prints the figures.
    .venv/bin/python bench/bench_train.py [--device cuda] [--steps 3] [--skip-miou] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from search_client.config import build_config
from search_client.data import build_dataset, class_names
from search_client.data.synthetic import SyntheticSpec, make_synthetic
from search_client.eval import evaluate
from search_client.models import build_model
from search_client.train import DistInfo, OhemCrossEntropy, Trainer, seed_everything
from search_client.train.losses import as_outputs, segmentation_terms

OUT = Path("runs/bench")


def step_throughput(arch: str, device: torch.device, steps: int, batch: int = 2, size=(512, 1024)) -> dict:
    """Images per second of full training steps on random inputs (one untimed warm-up step)."""
    torch.manual_seed(0)
    model = build_model(arch, 19).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    crit = OhemCrossEntropy()
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    x = torch.randn(batch, 3, *size, device=device)
    y = torch.randint(0, 19, (batch, *size), device=device)

    def step() -> None:
        with torch.autocast(device.type, enabled=amp):
            out = as_outputs(model(x))
            terms = segmentation_terms(crit, out["out"], out["aux"], y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(terms["task"] + terms["aux"]).backward()
        scaler.step(opt)
        scaler.update()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {"arch": arch, "batch": batch, "size": list(size), "steps": steps,
            "s_per_step": elapsed / steps, "images_per_s": batch * steps / elapsed}


def synthetic_miou(device: torch.device, root: Path, iterations: int | None) -> dict:
    if not (root / "synthetic.json").is_file():
        make_synthetic(root, SyntheticSpec(train=40, val=10, height=256, width=512, seed=0))
    over = {"data": {"root": str(root)}}
    if iterations:
        over["train"] = {"iterations": iterations}
    cfg = build_config("synthetic-cpu", over)
    seed_everything(cfg.train.seed, False)
    model = build_model(cfg.arch, cfg.num_classes)
    val = build_dataset(cfg.data, "val", train=False)
    names = class_names("cityscapes")
    untrained = evaluate(model.to(device), DataLoader(val, batch_size=1), names, device)
    run_dir = OUT / "synthetic-supernet"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    trainer = Trainer(cfg, run_dir, model, build_dataset(cfg.data, "train", train=True), val_set=val,
                      class_names=names, dist=DistInfo(device=device), progress=False)
    t0 = time.perf_counter()
    trainer.fit()
    train_s = time.perf_counter() - t0
    trained = json.loads((run_dir / "eval.json").read_text())
    return {"arch": cfg.arch, "iterations": cfg.train.iterations, "crop": list(cfg.data.crop),
            "batch": cfg.train.batch_size, "eval_size": list(cfg.data.eval_size or ()), "val_images": len(val),
            "train_seconds": train_s, "miou_untrained": untrained.miou, "miou_trained": trained["miou"],
            "pixel_accuracy_untrained": untrained.pixel_accuracy, "pixel_accuracy_trained": trained["pixel_accuracy"]}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="timed steps per architecture")
    p.add_argument("--iterations", type=int, help="override the synthetic-cpu budget")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-miou", action="store_true")
    p.add_argument("--data", type=Path, default=OUT / "synthetic-256x512")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    OUT.mkdir(parents=True, exist_ok=True)
    # The load average says how shared the machine was while measuring (CPU figures scale with it).
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
                    "threads": args.threads, "torch": torch.__version__, "loadavg_start": os.getloadavg()[0]}
    if not args.skip_throughput:
        result["throughput"] = [step_throughput(a, device, args.steps) for a in ("bisenetv2", "supernet")]
        for r in result["throughput"]:
            print(f"{r['arch']:>10} 512x1024 batch 2: {r['images_per_s']:.3f} images/s ({r['s_per_step']:.2f} s/step)")
    if not args.skip_miou:
        m = synthetic_miou(device, args.data, args.iterations)
        result["synthetic"] = m
        print(f"supernet on synthetic 256x512: mIoU untrained {100 * m['miou_untrained']:.1f} -> "
              f"{100 * m['miou_trained']:.1f} after {m['iterations']} iterations ({m['train_seconds']:.0f} s)")
    result["loadavg_end"] = os.getloadavg()[0]
    name = "train.json" if device.type == "cpu" else f"train-{device.type}.json"
    (OUT / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
