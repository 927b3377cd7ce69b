"""The tuning script's arguments: bad ones are refused with a message that names them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tune_settings_are_parsed_as_steps_and_ramp():
    args = load_script("tune_ours").parse(["--settings", "160:0.5", "130:0.25", "--layers", "3"])
    assert args.settings == [(160, 0.5), (130, 0.25)] and args.layers == [3] and args.seeds == [0, 1, 2]


@pytest.mark.parametrize("settings", [["160"], ["a:0.5"], ["0:0.5"], ["130:0"], ["130:1.5"]])
def test_bad_tune_settings_are_refused_by_name(settings, capsys):
    with pytest.raises(SystemExit):
        load_script("tune_ours").parse(["--settings", *settings])
    assert "--settings" in capsys.readouterr().err
