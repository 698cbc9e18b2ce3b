"""Train the encoder checkpoint shipped in the package (actsort_gpu/embed/checkpoints/default.pt).

Data: synthetic recordings the project generates itself (actsort_gpu.synth), never the shared
real data (licences). Steps: for each seed in 1000 .. 1000 + n - 1, synthesise a varied
recording (benchdata.training_recording_config: frame rate, soma size, brightness, noise and
motion drawn from the seed), ingest its Suite2p output, preprocess; then self-supervised
contrastive training across all stores (train.train_encoder). Seeds and timings go into the
checkpoint's ``training`` metadata and are printed as JSON.

    python scripts/train_encoder.py --workdir ../encoder_tmp --recordings 8 --epochs 10 \
        --out actsort_gpu/embed/checkpoints/default.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from actsort_gpu.config import EmbedConfig
from actsort_gpu.demo import synthetic_store
from actsort_gpu.embed.benchdata import training_recording_config
from actsort_gpu.embed.train import train_encoder

FIRST_SEED = 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="folder for the synthetic recordings")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--recordings", type=int, default=8)
    p.add_argument(
        "--kinds",
        default="2p",
        help="recording kinds (benchdata.RECORDING_KINDS), cycled over the seeds: e.g. 2p,1p",
    )
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides --epochs)")
    p.add_argument("--size", type=int, default=384, help="field of view side in px")
    p.add_argument("--frames", type=int, default=1200)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument(
        "--max-per-store",
        type=int,
        default=600,
        help="random subset of candidates per recording (default 600)",
    )
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--supervised",
        action="store_true",
        help="add the cross-entropy of a label head on the recordings' simulated truth "
        "(embed.supervised_weight) to the contrastive loss",
    )
    p.add_argument("--reuse", action="store_true", help="reuse stores already in --workdir")
    p.add_argument("--data-only", action="store_true", help="make the stores, do not train")
    p.add_argument(
        "--data-seconds",
        type=float,
        default=None,
        help="with --reuse: the time the reused stores took to make (recorded)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    stores, data_times = [], {}
    t0 = time.perf_counter()
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.recordings))
    kinds = args.kinds.split(",")
    for k, seed in enumerate(seeds):
        kind = kinds[k % len(kinds)]
        folder = workdir / (f"synth_{seed}" if kind == "2p" else f"synth_{kind}_{seed}")
        store = folder / "recording.actsort"
        if args.reuse and store.is_dir():
            stores.append(store)
            continue
        cfg = training_recording_config(seed, size_px=args.size, n_frames=args.frames, kind=kind)
        path, times = synthetic_store(folder, cfg, features=False, device=args.device)
        stores.append(path)
        data_times[seed] = times
    data_seconds = time.perf_counter() - t0
    if args.reuse and args.data_seconds is not None:
        data_seconds = args.data_seconds
    if args.data_only:
        print(
            json.dumps(
                {
                    "stores": [str(s) for s in stores],
                    "seconds": data_seconds,
                    "per_seed": data_times,
                },
                indent=1,
            )
        )
        return 0
    epochs = args.epochs
    if args.steps is not None:  # epochs from the steps: drop_last batches per epoch
        from actsort_gpu.store import SortStore

        n = sum(min(SortStore.open(s).n_candidates, args.max_per_store) for s in stores)
        per_epoch = max(1, n // EmbedConfig().batch_size)
        epochs = max(1, -(-args.steps // per_epoch))
    config = replace(
        EmbedConfig(),
        max_epochs=epochs,
        seed=args.seed,
        max_candidates_per_store=args.max_per_store,
        learning_rate=args.lr,
    )
    description = (
        ("NT-Xent + truth cross-entropy" if args.supervised else "self-supervised NT-Xent")
        + f" on {len(seeds)} synthetic recordings "
        f"(actsort_gpu.synth seeds {seeds[0]}-{seeds[-1]}, kinds {args.kinds} cycled, "
        f"{epochs} epochs, {args.size}x{args.size} px, "
        f"{args.frames} frames, benchdata.training_recording_config); "
        f"scripts/train_encoder.py; data generation {data_seconds:.0f} s"
    )
    meta = train_encoder(
        stores,
        args.out,
        config=config,
        supervised=args.supervised,
        device=args.device,
        description=description,
        recorded_stores=[str(Path(s).relative_to(workdir)) for s in stores],
    )
    report = {
        "out": args.out,
        "encoder_id": meta["encoder_id"],
        "recording_seeds": seeds,
        "data_seconds": round(data_seconds, 1),
        "training": meta["training"],
        "size_bytes": Path(args.out).stat().st_size,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
