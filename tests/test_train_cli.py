"""train.py's command line is built from TrainConfig: every field is a flag with its help, the choices are the module
constants that define them, and one check (`TrainConfig.check`) refuses bad values for the script and the library
alike, in one line that names the flag."""
from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import train as train_script
from aa.models import config as model_config
from aa.sampling import choices
from aa.training import config
from aa.training.config import TrainConfig, flag_name

ROOT = Path(__file__).resolve().parents[1]


def actions() -> dict[str, argparse.Action]:
    """train.py's flags by field name, from a freshly built parser."""
    return {a.dest: a for a in train_script.parser()._actions}


def bad_values() -> list[tuple[str, float]]:
    """(field, a value just outside its bounds) for every bound a field declares."""
    out = []
    for f in fields(TrainConfig):
        spec = f.metadata["flag"]
        if spec.minimum is not None:
            out.append((f.name, spec.minimum - 1))
        if spec.above is not None:
            out.append((f.name, spec.above))
        if spec.maximum is not None:
            out.append((f.name, spec.maximum + 1))
    return out


def test_every_field_is_a_flag_with_help_and_its_default_once():
    """Field x_y is the flag --x-y with a help text; the help shows a default once, and none for a required flag or
    a default of None (those fields say in words what happens without them)."""
    parser = train_script.parser()
    formatter = parser._get_formatter()
    by_name = {a.dest: a for a in parser._actions}
    for f in fields(TrainConfig):
        action = by_name[f.name]
        assert flag_name(f.name) in action.option_strings and action.help, f.name
        text = formatter._expand_help(action)
        assert text.count("(default:") <= 1, text
        shows_default = f.default is not None and not action.required
        assert text.count(f"(default: {f.default})") == shows_default, text
    assert by_name["data"].required and by_name["data"].nargs == "+"
    assert "(default: None)" not in parser.format_help() and "(default: )" not in parser.format_help()


def test_choices_are_the_module_constants(monkeypatch):
    """A value added where it is defined (choices.PREDICTIONS, choices.SNR_WEIGHTINGS, the architectures, the autocast
    and storage dtypes) becomes a choice of the flag and passes TrainConfig.check; a value that isn't fails it."""
    monkeypatch.setattr(choices, "PREDICTIONS", (*choices.PREDICTIONS, "x0"))
    monkeypatch.setattr(choices, "SNR_WEIGHTINGS", (*choices.SNR_WEIGHTINGS, "flat"))
    monkeypatch.setitem(model_config.ARCHITECTURES, "huge", model_config.tiny)
    monkeypatch.setitem(config.AMP, "fp8", None)
    monkeypatch.setitem(config.DTYPES, "fp8", None)
    flags = actions()
    added = {"prediction": "x0", "snr_weighting": "flat", "model": "huge", "mixed_precision": "fp8",
             "frozen_dtype": "fp8"}
    for name, value in added.items():
        assert value in flags[name].choices, name
    cfg, _ = train_script.parse_args(["--data", "x", "--prediction", "x0", "--model", "huge"])
    assert (cfg.prediction, cfg.model) == ("x0", "huge")
    TrainConfig(prediction="x0", snr_weighting="flat", model="huge").check()
    with pytest.raises(ValueError, match=r"^--prediction must be one of eps, v, x0, got 'x1'$"):
        TrainConfig(prediction="x1").check()


@pytest.mark.parametrize("name, value", bad_values())
def test_each_bound_refuses_in_one_line_naming_the_flag(name, value):
    """A value outside a field's declared bounds is a ValueError that starts with the flag's name."""
    with pytest.raises(ValueError, match=f"^{flag_name(name)} must be "):
        TrainConfig(**{name: value}).check()


def test_script_and_library_share_the_check(tmp_path, capsys, monkeypatch):
    """train.py prints the check's message as one `error:` line with exit code 2 before training starts; the
    library's train() raises the same message."""
    from aa.training.loop import train
    monkeypatch.setattr(train_script, "train", lambda *a: pytest.fail("training started"))
    assert train_script.main(["--data", "x", "--out", str(tmp_path / "run"), "--lr", "-1"]) == 2
    assert capsys.readouterr().err == "error: --lr must be greater than 0, got -1\n"
    with pytest.raises(ValueError, match=r"^--lr must be greater than 0, got -1$"):
        train(TrainConfig(data="x", out=str(tmp_path / "run"), lr=-1, device="cpu"))
    assert not (tmp_path / "run").exists()


def test_help_does_not_load_the_training_stack():
    """`train.py --help` prints the flags without importing the training loop or the data loader (seconds)."""
    code = ("import sys, runpy; sys.argv = ['train.py', '--help']\n"
            "try: runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('aa.training.loop', 'aa.training.data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--mixed-precision" in out and out.rstrip().endswith("[]"), out
