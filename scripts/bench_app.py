"""Benchmark the annotation page's server-side key-press path, and validate the stopping signal.

    python scripts/bench_app.py [--n 100000] [--presses 40]
    python scripts/bench_app.py --stopping-study [--repeats 5]

Key-press path (what a press of Up / Down costs on the server before the page can be sent):
journal append (fsync) + learner refit + rescore of all N + next query + rendering of every
panel (map repaint of the changed candidates, footprint, snapshots, trace, event traces, text),
then the encoding the page does before Gradio sends the files (content key of each panel, JPEG
map, PNG level-1 panels; ``encode_ms``), next to what Gradio's default PNG would have cost
(``encode_png_default_ms``, the page before this change). Transfer and the browser come on top:
tests/test_browser.py measures the whole round trip.

The stopping study runs the product learner (DCAL, class-balanced) on the ActSort benchmark
(../shared/data/actsort_benchmark/twophoton_motion.mat), one annotator answering, the majority
of the other three as truth, and reports when the page's "stable" signal first fires, with the
balanced accuracy then, at 5 % of candidates labelled, and at 2x the firing point.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def bench_keypress(n: int, presses: int, workdir: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from PIL import Image
    from ui_fixtures import make_test_store

    from actsort_gpu.ui import handlers as H
    from actsort_gpu.ui import open_workspace, render
    from actsort_gpu.ui.session import ViewState

    def encode(p, png_default=False):
        t = time.perf_counter()
        for name, kind in (
            ("map", "map"),
            ("footprint", "panel"),
            ("snapshots", "panel"),
            ("trace", "panel"),
            ("event_traces", "panel"),
        ):
            img = getattr(p, name)
            if img is None:
                continue
            if png_default:
                import io

                Image.fromarray(img).save(io.BytesIO(), "png")
            else:
                render.fingerprint(img)
                render.encode_image(img, kind)
        return 1e3 * (time.perf_counter() - t)

    side = int(np.ceil(np.sqrt(n * 150)))  # ~150 px per candidate, like a dense FOV
    t0 = time.perf_counter()
    path = make_test_store(
        workdir,
        n=n,
        height=side,
        width=side,
        n_frames=2000,
        radius=4,
        n_features=76,
        with_snapshots=True,
    )
    t_store = time.perf_counter() - t0
    t0 = time.perf_counter()
    ws = open_workspace([path], annotator="bench")
    t_open = time.perf_counter() - t0
    truth = ws.stores[0].store.truth_labels()
    st, _ = H.on_load(ws, ViewState())
    total, parts, enc, enc_png = [], [], [], []
    for _ in range(presses):
        t0 = time.perf_counter()
        st, p = H.on_label(ws, st, int(truth[st.current]))
        enc.append(encode(p))
        total.append(1e3 * (time.perf_counter() - t0))
        parts.append({**p.timings_ms, "learner": total[-1] - enc[-1] - sum(p.timings_ms.values())})
        enc_png.append(encode(p, png_default=True))
    ws.close()
    skip = min(6, presses // 4)  # cold start: first labels before the model exists
    arr = np.array(total[skip:])
    pct = lambda v, q: round(float(np.percentile(v[skip:], q)), 1)  # noqa: E731
    return {
        "n_candidates": n,
        "fov_px": side,
        "store_build_s": round(t_store, 1),
        "open_s": round(t_open, 2),
        "presses": presses,
        "skipped_warmup": skip,
        "median_ms": round(float(np.median(arr)), 1),
        "p95_ms": round(float(np.percentile(arr, 95)), 1),
        "max_ms": round(float(arr.max()), 1),
        "encode_ms": {"median": pct(enc, 50), "p95": pct(enc, 95)},
        "encode_png_default_ms": {"median": pct(enc_png, 50), "p95": pct(enc_png, 95)},
        "parts_median_ms": {k: pct([p[k] for p in parts], 50) for k in parts[0]},
        "parts_p95_ms": {k: pct([p[k] for p in parts], 95) for k in parts[0]},
    }


def stopping_study(repeats: int, max_frac: float = 0.15) -> dict:
    import torch

    torch.set_num_threads(1)
    from actsort_gpu.active.engine import product_policy
    from actsort_gpu.active.learner import DatasetInput, Learner
    from actsort_gpu.active.simulate import binary_metrics, load_labelled_features
    from actsort_gpu.ui.progress import StabilityTracker

    mat = REPO.parent / "shared" / "data" / "actsort_benchmark" / "twophoton_motion.mat"
    _, x, ann, names = load_labelled_features(mat)
    n = x.shape[0]
    rows = []
    for rep in range(repeats):
        a = rep % len(names)
        oracle = ann[a]
        truth = np.where(np.delete(ann, a, 0).sum(0) > 0, 1, -1)
        learner = Learner([DatasetInput("bench", x)], product_policy(), device="cpu", seed=rep)
        tr = StabilityTracker()
        fired, ba_at = None, {}
        budget = int(max_frac * n)
        marks = {int(0.05 * n): "5pct"}
        for k in range(1, budget + 1):
            i = learner.next_query(1)[0]
            d_before = learner.decisions() if learner.probabilities() is not None else None
            tr.before_label(None if d_before is None else int(d_before[i]), int(oracle[i]))
            learner.label(i, int(oracle[i]))
            dec = learner.decisions() if learner.probabilities() is not None else None
            tr.after_label(dec, k)
            if dec is None:
                continue
            ba = binary_metrics(dec, truth)["ba"]  # model decisions on all (ActSort, B14)
            if fired is None and tr.state().stable:
                fired = k
                ba_at["fired"] = ba
                ba_at["prequential_at_fired"] = tr.state().prequential_ba
                marks[2 * k] = "twice_fired"
            if k in marks:
                ba_at[marks[k]] = ba
            if fired is not None and "5pct" in ba_at and "twice_fired" in ba_at:
                break
        ba_at.setdefault("5pct", ba)
        rows.append(
            {
                "annotator": names[a],
                "fired_at_labels": fired,
                "fired_at_pct": None if fired is None else round(100 * fired / n, 2),
                **{k: round(float(v), 4) for k, v in ba_at.items() if v is not None},
            }
        )
    fired = [r for r in rows if r["fired_at_labels"]]
    gap = [r["5pct"] - r["fired"] for r in fired]
    return {
        "dataset": mat.name,
        "n_candidates": n,
        "runs": rows,
        "mean_fired_pct": round(float(np.mean([r["fired_at_pct"] for r in fired])), 2)
        if fired
        else None,
        "mean_ba_gap_5pct_minus_fired": round(float(np.mean(gap)), 4) if gap else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--n", type=int, default=100_000, help="candidates in the synthetic store (default 100000)"
    )
    ap.add_argument(
        "--presses", type=int, default=40, help="labels to time (default 40, first few skipped)"
    )
    ap.add_argument(
        "--stopping-study",
        action="store_true",
        help="instead: when the stopping signal fires on the ActSort benchmark",
    )
    ap.add_argument("--repeats", type=int, default=4, help="runs of the stopping study (default 4)")
    args = ap.parse_args()
    if args.stopping_study:
        print(json.dumps(stopping_study(args.repeats), indent=1))
        return 0
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_keypress(args.n, args.presses, Path(d)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
