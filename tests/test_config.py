"""Config loading: defaults, YAML overrides, rejection of unknown keys."""

from pathlib import Path

import pytest

from actsort_gpu.config import Config, default_config_yaml, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_file_matches_code():
    # configs/defaults.yaml is generated; regenerate with scripts/write_default_config.py.
    assert (REPO / "configs" / "defaults.yaml").read_text() == default_config_yaml()


def test_defaults_file_loads_to_defaults():
    assert load_config(REPO / "configs" / "defaults.yaml") == Config()


def test_yaml_override_changes_only_named_keys(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("active:\n  threshold: 0.7\npreprocess:\n  edge_exclusion_frames: [3, 4]\n")
    cfg = load_config(path)
    assert cfg.active.threshold == 0.7
    assert cfg.preprocess.edge_exclusion_frames == (3, 4)
    assert cfg.active.strategy == Config().active.strategy


def test_unknown_key_is_rejected_with_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("active:\n  treshold: 0.7\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*treshold"):
        load_config(path)


def test_unknown_section_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("activ:\n  threshold: 0.7\n")
    with pytest.raises(ValueError, match="unknown section 'activ'"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_argument():
    assert load_config(active={"seed": 5}).active.seed == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"features: [1, 2\n", r"broken\.yaml: not valid YAML at line 2, column 1: expected ','"),
        (b"a: b: c\n", r"broken\.yaml: not valid YAML at line 1, column 5: mapping values"),
        (b"\x7fELF\x02\x01\x01\x00\xd0\xff", r"broken\.yaml: not a text \(YAML\) file"),
    ],
)
def test_a_broken_file_is_named_with_where_it_breaks(tmp_path, content, message):
    path = tmp_path / "broken.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_config(path)
