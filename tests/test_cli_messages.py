"""What the CLI says (issue 15): help texts, input errors, when "serving" is printed, Dask noise."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

import pytest
from ui_fixtures import make_test_store

from actsort_gpu.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_has_help_and_no_help_shows_a_literal_percent_pair():
    for name, sp in _subparsers().items():
        missing = [
            a.option_strings or a.dest
            for a in sp._actions
            if a.help is None and not isinstance(a, argparse._HelpAction)
        ]
        assert not missing, f"actsort {name}: options without help: {missing}"
        # description= is printed as is, help= is %-formatted: neither may show "%%"
        assert "%%" not in sp.format_help(), f"actsort {name} --help shows a literal %%"


def test_bench_app_options_have_help(capsys):
    import runpy
    import sys

    argv = sys.argv
    sys.argv = ["bench_app.py", "--help"]
    try:
        with pytest.raises(SystemExit):
            runpy.run_path(str(REPO / "scripts" / "bench_app.py"), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    for flag in ("--n N", "--presses PRESSES", "--repeats REPEATS"):
        line = next(x for x in out.splitlines() if x.strip().startswith(flag))
        assert len(line.split()) > 2, f"{flag} has no help"


def test_ingest_names_both_missing_inputs(tmp_path, capsys):
    rc = main(
        [
            "ingest",
            "--movie",
            str(tmp_path / "nope.tif"),
            "--extraction",
            str(tmp_path / "nope_suite2p"),
            "--out",
            str(tmp_path / "s.actsort"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "--movie" in err and "nope.tif" in err
    assert "--extraction" in err and "nope_suite2p" in err
    assert not (tmp_path / "s.actsort").exists()


def test_sort_says_serving_only_once_the_page_is_up(tmp_path, capsys, monkeypatch):
    import gradio as gr

    from actsort_gpu.labels import Journal

    # a missing store: an error, and nothing said about serving
    assert main(["sort", str(tmp_path / "missing.actsort"), "--port", str(_free_port())]) == 1
    out, err = capsys.readouterr()
    assert "serving" not in out and "missing.actsort" in err
    # a store whose journal another process holds: the same
    path = make_test_store(tmp_path, n=10)
    holder = Journal(path / "labels" / "journal.jsonl")
    try:
        assert main(["sort", str(path), "--port", str(_free_port())]) == 1
    finally:
        holder.close()
    out, err = capsys.readouterr()
    assert "serving" not in out and "open for writing" in err
    # a good store: the line comes with the page's URL, after the server started
    port = _free_port()
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: self.close())
    assert main(["sort", str(path), "--port", str(port), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"serving 1 store(s) on http://127.0.0.1:{port}" in out and "Ctrl+C" in out
    Journal(path / "labels" / "journal.jsonl").close()  # the lock was given back


def test_local_dask_cluster_is_quiet():
    from actsort_gpu.cluster import _quiet_distributed

    root = logging.getLogger()
    old = root.level
    logging.getLogger("distributed").setLevel(logging.INFO)
    try:
        root.setLevel(logging.INFO)
        _quiet_distributed()
        assert logging.getLogger("distributed.scheduler").getEffectiveLevel() >= logging.WARNING
        assert logging.getLogger("distributed").level == logging.WARNING
        logging.getLogger("distributed").setLevel(logging.INFO)
        root.setLevel(logging.DEBUG)  # -v: the user wants them
        _quiet_distributed()
        assert logging.getLogger("distributed").level == logging.INFO
    finally:
        root.setLevel(old)
        for name in list(logging.root.manager.loggerDict):
            if name == "distributed" or name.startswith("distributed."):
                logging.getLogger(name).setLevel(logging.NOTSET)


def test_demo_folder_is_ignored_by_git():
    lines = (REPO / ".gitignore").read_text().splitlines()
    assert "actsort-demo/" in lines


def test_sort_names_a_port_or_host_it_cannot_serve_on(tmp_path, capsys):
    """A port out of range, a taken port, a host name nobody knows and an address of another
    computer each end in one line saying which (Gradio says 'Cannot find empty port' for all)."""
    path = make_test_store(tmp_path, n=12)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        cases = [
            (["--port", "99999"], "--port 99999: a port is a number from 1 to 65535"),
            (["--port", str(busy)], f"port {busy} on 127.0.0.1 is taken"),
            (["--host", "no-such-host.invalid", "--auth", "a:b"], "--host no-such-host.invalid"),
            (
                ["--host", "192.0.2.1", "--auth", "a:b"],
                "192.0.2.1: not an address of this computer",
            ),
        ]
        for args, message in cases:
            assert main(["sort", str(path), *args, "--device", "cpu"]) == 1
            err = capsys.readouterr().err
            assert message in err and "Traceback" not in err, err


def test_simulate_refuses_options_it_cannot_honour(tmp_path, capsys):
    """Budgets of 100 % or more (nothing left to score: 'not yet labelled' printed 0.000),
    a negative seed, zero repeats: one line naming the option."""
    csv = tmp_path / "f.csv"
    csv.write_text(
        "a,b,label_ana\n" + "".join(f"{i},{i % 3},{1 if i % 2 else -1}\n" for i in range(40))
    )
    base = ["simulate", "--features", str(csv), "--json", str(tmp_path / "r.json")]
    for args, message in (
        (["--budgets", "150"], "--budgets must be >= 0 % and below 100 %"),
        (["--budgets", "100"], "--budgets must be >= 0 % and below 100 %"),
        (["--budgets", "-1"], "--budgets must be >= 0 % and below 100 %"),
        (["--seed", "-3"], "--seed must be >= 0, got -3"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    ):
        assert main([*base, *args]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
