"""Each setting is declared once (flows/settings.py) and reaches, from that declaration alone, the command
line, the environment and refsr.toml readers, and exactly the keys it is declared to change."""
from __future__ import annotations

import argparse
import enum
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from db.models import RunKind
from flows.album_config import AlbumConfig
from flows.cli.parser import build_parser
from flows.options import Affects, Declared, declared
from flows.preflight import AlbumCheck
from flows.resources import ResourceSpec, device_spec
from flows.settings import DeviceChoice, Settings
from flows.shortcut import fingerprint
from pipeline.scan import ScanSettings

ROOT = Path(__file__).resolve().parents[2]
TABLE = declared(Settings)
BASE = {"home": Path("/nonexistent/home"), "model_path": Path("/nonexistent/model.safetensors")}


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _changed(d: Declared, tmp_path: Path) -> dict[str, Any]:
    """Settings that differ from the defaults in `d` (and, where a rule ties two, its partner)."""
    if d.name in ("signing_key", "signing_cert"):  # given together or not at all
        return {"signing_key": tmp_path / "key.pem", "signing_cert": tmp_path / "cert.pem"}
    if d.name == "dask":
        return {"dask": "tcp://scheduler:8786"}
    if d.name == "precision":  # float32 is the CPU's default autocast already, float16 needs CUDA
        return {"precision": "bfloat16"}
    default = getattr(Settings.from_env({}, **BASE), d.name)
    if isinstance(default, bool):
        return {d.name: not default}
    if isinstance(default, enum.Enum):
        return {d.name: next(m for m in type(default) if m is not default and m.value != "cuda")}
    if isinstance(default, Path) or d.name in ("clip_weights", "out_dir"):
        return {d.name: tmp_path / d.name}
    if d.name == "database_url":
        return {d.name: f"sqlite:///{tmp_path / 'other.db'}"}
    if d.option.choices:
        return {d.name: next(c for c in d.option.choices if c != default)}
    if d.name == "ref_ratio":
        return {d.name: 3.0}
    if d.name == "min_relevance":  # a mean soft attention, in [0, 1]
        return {d.name: 0.5}
    if default is None or isinstance(default, (int, float)):
        return {d.name: (default or 64) + 1}
    raise AssertionError(f"the test knows no other value for {d.name}={default!r}: add one")


def test_every_setting_is_declared_with_help_and_what_it_changes() -> None:
    assert {d.name for d in TABLE} == {f.name for f in fields(Settings)}
    for d in TABLE:
        assert d.option.help.strip(), d.name
        assert d.default is not MISSING or d.option.default_from is not None, f"{d.name} has no default"
        assert bool(d.option.env) == bool(d.option.env_help), f"{d.name}: a variable and its help go together"
        assert not d.option.flags or d.option.group is not None, f"{d.name}: a flag needs a help group"


def test_every_flag_comes_from_the_table_and_lands_on_its_setting() -> None:
    offered: dict[str, set[str]] = {}
    for name, command in _commands().items():
        given = set(command.get_default("settings_given") or ())
        for action in command._actions:
            if action.dest in given:
                d = next(d for d in TABLE if d.name == action.dest)
                assert tuple(action.option_strings) == d.option.flags, (name, action.dest)
                assert action.default is None  # not given = None, so the environment and defaults decide
                offered.setdefault(action.dest, set()).add(name)
            else:  # the command's own arguments never land on a setting
                assert action.dest not in {d.name for d in TABLE}, (name, action.dest)
    assert set(offered) == {d.name for d in TABLE if d.option.flags}


@pytest.mark.parametrize("d", [d for d in TABLE if d.option.flags], ids=lambda d: d.name)
def test_a_flag_reaches_its_setting(d: Declared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import commands as cli

    monkeypatch.setattr(cli, "workspace_environment", lambda home, verbose: None)
    command = "enhance" if d.name in _commands()["enhance"].get_default("settings_given") else "index"
    argv = [command, str(tmp_path / "album")]
    value = _changed(d, tmp_path)[d.name]
    extra = [d.option.flags[0]] if d.option.action else [d.option.flags[0], str(value.value if isinstance(
        value, enum.Enum) else value)]
    if d.name in ("signing_key", "signing_cert"):
        extra = ["--signing-key", str(tmp_path / "key.pem"), "--signing-cert", str(tmp_path / "cert.pem")]
    args = build_parser().parse_args(argv + extra)
    args.verbose = False
    settings = cli._settings(args)
    expected = getattr(Settings.from_env({}, **{**BASE, **_changed(d, tmp_path)}), d.name)
    assert getattr(settings, d.name) == expected != getattr(Settings.from_env({}, **BASE), d.name)


@pytest.mark.parametrize("d", [d for d in TABLE if d.option.env], ids=lambda d: d.name)
def test_a_variable_reaches_its_setting_and_a_flag_beats_it(d: Declared, tmp_path: Path) -> None:
    value = _changed(d, tmp_path)[d.name]
    text = str(value.value if isinstance(value, enum.Enum) else value)
    env = {d.option.env: text}
    given = {k: v for k, v in BASE.items() if k != d.name}
    if d.name == "signing_key":
        given["signing_cert"] = tmp_path / "cert.pem"
    if d.name == "signing_cert":
        given["signing_key"] = tmp_path / "key.pem"
    from_env = Settings.from_env(env, **given)
    assert getattr(from_env, d.name) == getattr(Settings.from_env({}, **given, **{d.name: value}), d.name)
    default = Settings.from_env({}, **BASE)
    if d.name not in ("signing_key", "signing_cert"):
        assert getattr(from_env, d.name) != getattr(default, d.name)
    if getattr(default, d.name) is not None:  # None is "not given": the variable then decides
        assert getattr(Settings.from_env(env, **{**BASE, d.name: getattr(default, d.name)}), d.name) == \
            getattr(default, d.name)


@pytest.mark.parametrize(("variable", "text"), [("REFSR_DEVICE", "gpu"), ("REFSR_PRECISION", "half")])
def test_a_bad_variable_is_named_in_its_error(variable: str, text: str) -> None:
    with pytest.raises(ValueError, match=rf"^\${variable}='{text}': "):
        Settings.from_env({variable: text}, **BASE)


def test_refsr_toml_reads_exactly_the_declared_keys(tmp_path: Path) -> None:
    keys = {d.option.toml: d for d in TABLE if d.option.toml}
    assert keys, "refsr.toml has keys"
    for key, d in keys.items():
        table, name = key.split(".")
        value = _changed(d, tmp_path)[d.name]
        (tmp_path / "refsr.toml").write_text(f"[{table}]\n{name} = {value!r}\n")
        assert AlbumConfig.read(tmp_path).get(d.name) == value
    (tmp_path / "refsr.toml").write_text("[scan]\nworkers = 3\n")
    with pytest.raises(ValueError, match="unknown"):
        AlbumConfig.read(tmp_path)


def _keys(settings: Settings, tmp_path: Path) -> dict[str, Any]:
    found = AlbumCheck(tmp_path, ScanSettings(), ())
    amp = device_spec(settings.device, settings.precision).amp_dtype
    return {"resources": ResourceSpec.of(settings), "run": fingerprint(RunKind.enhance, found, settings),
            "index": fingerprint(RunKind.index, found, settings),
            "job": settings.enhance_params(amp).pixel_params()}


@pytest.mark.parametrize("d", TABLE, ids=lambda d: d.name)
def test_a_setting_changes_exactly_the_keys_it_declares(d: Declared, tmp_path: Path) -> None:
    base = Settings.from_env({}, **BASE)
    other = base.with_(**_changed(d, tmp_path))
    before, after = _keys(base, tmp_path), _keys(other, tmp_path)
    declared_to = {"resources": Affects.RESOURCES, "run": Affects.RUN, "index": Affects.INDEX,
                   "job": Affects.JOB_KEY}
    for key, flag in declared_to.items():
        if key == "job" and d.name == "device":
            # The device reaches the key as the autocast it resolves to; on a CPU every choice is float32.
            assert before[key] == after[key] and d.option.affects & flag and other.device is DeviceChoice.CPU
            continue
        assert (before[key] != after[key]) == bool(d.option.affects & flag), f"{d.name} and the {key} key"
