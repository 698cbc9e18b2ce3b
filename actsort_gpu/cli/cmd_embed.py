"""``actsort embed`` (write embeddings/ with an encoder) and ``actsort embed-train``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_config_argument, add_device_argument, add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="learned embeddings of every candidate -> embeddings/",
        description="Run an encoder over each candidate's footprint crop, event snapshot "
        "images and event traces and write embeddings/matrix (N, D). Needs "
        "`actsort preprocess` first. Default encoder: the pretrained checkpoint "
        "shipped in the package.",
    )
    p.add_argument("store", metavar="STORE", help="sort store (*.actsort)")
    p.add_argument(
        "--checkpoint",
        metavar="PT",
        default=None,
        help="encoder checkpoint from `actsort embed-train` (default: shipped one)",
    )
    p.add_argument(
        "--adapt",
        action="store_true",
        help="first fine-tune the encoder self-supervised on this store's candidates "
        "(embed.adapt_seconds, default 60 s), save it beside the store and embed with it",
    )
    p.add_argument(
        "--adapt-seconds",
        type=float,
        default=None,
        metavar="S",
        help="time for --adapt (default: embed.adapt_seconds of the config)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="candidates per block (default: embed.infer_batch_size of the config)",
    )
    add_device_argument(p)
    add_config_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=run)

    t = subparsers.add_parser(
        "embed-train",
        help="train an encoder across sort stores -> checkpoint",
        description="Self-supervised (contrastive) training of the candidate encoder on the "
        "candidates of one or many preprocessed stores; --supervised adds the "
        "stores' labels (label journal, else truth/labels).",
    )
    t.add_argument("stores", nargs="+", metavar="STORE", help="preprocessed sort stores")
    t.add_argument(
        "--out",
        required=True,
        metavar="PT",
        help="checkpoint file to write (an existing file only if it is an encoder checkpoint)",
    )
    t.add_argument("--epochs", type=int, default=None, help="default: embed.max_epochs")
    t.add_argument("--seed", type=int, default=None, help="default: embed.seed")
    t.add_argument(
        "--max-per-store",
        type=int,
        default=None,
        metavar="N",
        help="random subset of N candidates per store (default: all)",
    )
    t.add_argument(
        "--supervised", action="store_true", help="add a cross-entropy term on the stores' labels"
    )
    t.add_argument(
        "--init",
        metavar="PT",
        default=None,
        help="start from this checkpoint (fine-tuning), e.g. the shipped one",
    )
    add_device_argument(t)
    add_config_argument(t)
    add_progress_argument(t)
    t.set_defaults(func=run_train)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..embed import embed

    cfg = load_config(args.config).embed
    batch = args.batch_size if args.batch_size is not None else cfg.infer_batch_size
    checkpoint = args.checkpoint
    if args.adapt:
        from ..store import SortStore

        SortStore.open(args.store).check_no_session("embed")  # before a minute of training
        checkpoint = _adapt(args, cfg)
    emb = embed(
        args.store, checkpoint, device=args.device, batch_size=batch, progress=args.progress
    )
    from .. import schema
    from ..store import SortStore

    attrs = SortStore.open(args.store).attrs_of(schema.EMBEDDING_MATRIX)
    print(
        f"{args.store}: {schema.EMBEDDING_MATRIX} {emb.shape[0]} x {emb.shape[1]} "
        f"(encoder {attrs['encoder_id']})"
    )
    return 0


def adapted_checkpoint_path(store) -> Path:
    """Where ``--adapt`` writes the store's own encoder: ``<store stem>.encoder.pt`` beside
    the store (a store ``a/s1.actsort`` -> ``a/s1.encoder.pt``)."""
    store = Path(store).resolve()
    return store.with_name(f"{store.stem}.encoder.pt")


def _adapt(args, cfg) -> Path:
    from dataclasses import replace

    from ..embed.train import adapt_encoder

    if args.adapt_seconds is not None:
        if not args.adapt_seconds > 0:
            raise ValueError(f"--adapt-seconds: expected > 0, got {args.adapt_seconds}")
        cfg = replace(cfg, adapt_seconds=args.adapt_seconds)
    out = adapted_checkpoint_path(args.store)
    meta = adapt_encoder(
        args.store,
        out,
        checkpoint=args.checkpoint,
        config=cfg,
        device=args.device,
        progress=args.progress,
    )
    info = meta["training"]
    print(
        f"adapted encoder {meta['encoder_id']} to {info['n_candidates']} candidates in "
        f"{info['seconds_total']:.0f} s ({info['steps']} steps) -> {out}"
    )
    return out


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..config import load_config
    from ..embed import train_encoder

    cfg = load_config(args.config).embed
    changes = {
        k: v
        for k, v in (
            ("max_epochs", args.epochs),
            ("seed", args.seed),
            ("max_candidates_per_store", args.max_per_store),
        )
        if v is not None
    }
    cfg = replace(cfg, **changes)
    meta = train_encoder(
        args.stores,
        args.out,
        config=cfg,
        supervised=args.supervised,
        device=args.device,
        progress=args.progress,
        init_checkpoint=args.init,
    )
    info = meta["training"]
    print(
        f"wrote {args.out}: encoder {meta['encoder_id']}, {info['n_candidates']} candidates "
        f"from {len(args.stores)} store(s), {cfg.max_epochs} epochs, seed {cfg.seed}, "
        f"{info['seconds_total']:.1f} s"
    )
    return 0
