"""Output files: replaced only when they are the command's own earlier ones, and whole
(``actsort_gpu.outputs``; used by export, simulate and the encoder checkpoints)."""

import json

import numpy as np
import pytest

from actsort_gpu.cli import main


def test_outputs_replace_only_their_own_files_and_whole(tmp_path):
    from actsort_gpu.outputs import check_replaceable, replace_whole

    mine = tmp_path / "notes.txt"
    mine.write_text("my notes")
    with pytest.raises(FileExistsError, match="notes.txt: exists and is not an earlier thing"):
        check_replaceable(mine, lambda p: p.read_text() == "ours", "thing")
    with pytest.raises(FileExistsError):  # unreadable as ours: someone else's
        check_replaceable(mine, lambda p: 1 / 0, "thing")
    with pytest.raises(IsADirectoryError):
        check_replaceable(tmp_path, lambda p: True, "thing")
    check_replaceable(tmp_path / "new.txt", lambda p: False, "thing")
    mine.write_text("ours")
    check_replaceable(mine, lambda p: p.read_text() == "ours", "thing")

    def fails(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_whole(mine, fails)

    def full(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device", str(tmp))

    with pytest.raises(OSError, match=r"No space left on device: '.*notes\.txt'$"):
        replace_whole(mine, full)
    assert mine.read_text() == "ours" and sorted(tmp_path.iterdir()) == [mine]
    assert replace_whole(tmp_path / "a" / "b.csv", lambda t: t.write_text("x")).read_text() == "x"
    shared = tmp_path / "a" / "b.csv"
    shared.chmod(0o640)
    replace_whole(shared, lambda t: t.write_text("y"))
    assert shared.read_text() == "y" and shared.stat().st_mode & 0o777 == 0o640


def _csv(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.4, 1, -1)
    x = rng.normal(size=(n, 4)) + 2.0 * (y > 0)[:, None]
    rows = ["f0,f1,f2,f3,label_a,label_b"]
    rows += [",".join([*(f"{v:.4f}" for v in x[i]), str(y[i]), str(y[i])]) for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_simulate_checks_its_outputs_before_running(tmp_path, capsys):
    """simulate --json / --plot overwrote any file, and a plot format matplotlib cannot write
    failed only after the whole simulation."""
    data = _csv(tmp_path / "f.csv")
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    base = ["simulate", "--features", str(data), "--repeats", "1", "--budgets", "10"]
    base += ["--strategies", "random"]
    assert main([*base, "--json", str(notes)]) == 1
    assert "notes.json: exists and is not an earlier simulation JSON" in capsys.readouterr().err
    assert json.loads(notes.read_text()) == {"my": "notes"}
    out = tmp_path / "r.json"
    assert main([*base, "--json", str(out), "--plot", str(tmp_path / "p.txt")]) == 1
    assert "expected a .png, .svg, .pdf file" in capsys.readouterr().err
    assert not out.exists()
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"\x89PNG not ours")
    assert main([*base, "--json", str(out), "--plot", str(figure)]) == 1
    assert figure.read_bytes() == b"\x89PNG not ours" and not out.exists()
    for suffix in (".png", ".svg", ".pdf"):
        plot = tmp_path / f"p{suffix}"
        for _ in range(2):  # the second run replaces the first's files
            assert main([*base, "--json", str(out), "--plot", str(plot)]) == 0
        assert plot.stat().st_size > 1000 and "results" in json.loads(out.read_text())
    assert not [p for p in tmp_path.iterdir() if ".actsort-" in p.name]


def test_encoder_checkpoint_never_replaces_another_file(tmp_path):
    import torch

    from actsort_gpu.embed.encoder import CandidateEncoder, is_checkpoint, save_checkpoint

    enc = CandidateEncoder()
    weights = tmp_path / "weights.pt"
    torch.save({"my": torch.ones(2)}, weights)
    with pytest.raises(FileExistsError, match="not an earlier encoder checkpoint"):
        save_checkpoint(weights, enc, image_size=32)
    assert torch.load(weights, weights_only=True)["my"].sum() == 2
    ckpt = tmp_path / "enc.pt"
    for _ in range(2):
        save_checkpoint(ckpt, enc, image_size=32)
    assert is_checkpoint(ckpt) and sorted(p.name for p in tmp_path.iterdir()) == [
        "enc.pt",
        "weights.pt",
    ]
