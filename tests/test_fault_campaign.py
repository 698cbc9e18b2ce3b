"""The fast cases of scripts/fault_campaign.py (issue 16), in this process.

Bad inputs to ingest (--out on an input or a non-store, bad CSR parts, lying headers, corrupt and
truncated files, implausible downsampling, bad --fs), a corrupt compressed movie at preprocess, an
interrupted features stage, and journal corruption: every case must end in one clear line naming
the file (or succeed) with no input, label or store lost. The kill -9, tmpfs (disk full,
read-only), page and 4-thread cases are slower or need root: they run in the full script
(`python scripts/fault_campaign.py`, table in benchmarks/RESULTS.md), not here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_campaign.py"
_spec = importlib.util.spec_from_file_location("fault_campaign", _SCRIPT)
campaign = importlib.util.module_from_spec(_spec)
sys.modules["fault_campaign"] = campaign
_spec.loader.exec_module(campaign)

FAST = [c.name for c in campaign.CASES if c.fast]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("campaign") / "_template"
    campaign.make_inputs(path)
    return path


@pytest.mark.parametrize("name", FAST)
def test_fast_case(name, template, tmp_path):
    case = next(c for c in campaign.CASES if c.name == name)
    outcome = campaign.run_case(case, tmp_path, template, in_process=True)
    assert outcome.clean and not outcome.lost, campaign.table([outcome])


def test_every_case_is_in_the_table():
    names = [c.name for c in campaign.CASES]
    assert len(names) == len(set(names)) and len(FAST) >= 30
