"""The process's resource cache: the same object while held, the least recently used let go beyond its bound."""
from __future__ import annotations

import gc
import weakref
from collections import OrderedDict
from pathlib import Path

import pytest

from flows import resources
from flows.settings import DeviceChoice
from pipeline.embedding.registry import EmbedderKind, EmbedderSettings


def _spec(name: str) -> resources.ResourceSpec:
    return resources.ResourceSpec("sqlite:///unused.db", Path(f"/models/{name}.safetensors"), DeviceChoice.CPU, None,
                                  EmbedderKind.FALLBACK, EmbedderSettings(), 1, 64)


@pytest.fixture()
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_per_process", OrderedDict())
    monkeypatch.setattr(resources, "MAX_HELD", 2)


@pytest.mark.usefixtures("empty_cache")
def test_the_same_settings_share_one_resources() -> None:
    assert resources.held(_spec("a")) is resources.held(_spec("a"))
    assert resources.held(_spec("a")) is not resources.held(_spec("b"))


@pytest.mark.usefixtures("empty_cache")
def test_the_least_recently_used_is_let_go_and_freed() -> None:
    a, b = resources.held(_spec("a")), resources.held(_spec("b"))
    assert resources.held(_spec("a")) is a  # a is now the most recent: b goes first
    gone = weakref.ref(b)
    del b
    c = resources.held(_spec("c"))
    assert list(resources._per_process) == [_spec("a"), _spec("c")]
    gc.collect()
    assert gone() is None  # nothing else kept it, its model with it
    assert resources.held(_spec("a")) is a and resources.held(_spec("c")) is c
    assert resources.held(_spec("b")) is not None and len(resources._per_process) == 2


@pytest.mark.usefixtures("empty_cache")
def test_a_dropped_resources_still_works_for_whoever_holds_it() -> None:
    first = resources.held(_spec("a"))
    resources.held(_spec("b"))
    resources.held(_spec("c"))
    assert _spec("a") not in resources._per_process
    assert first.spec == _spec("a") and first.device.name == "cpu"  # a running task keeps using it
