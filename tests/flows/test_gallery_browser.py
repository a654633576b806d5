"""The gallery of a generated run, opened in a real headless Chromium: images load, every card is
there, the page runs its script under its own CSP, works without JavaScript, and asks no network."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from db.engine import init_db, make_session_factory
from flows import report
from tests.flows.test_report import GeneratedRun, make_generated_run

pytestmark = pytest.mark.browser

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
# Browser-initiated traffic (updater, account checks) is labelled with this initiator in the net log;
# anything the page asks for carries the page's origin ("null" for file:) instead.
BROWSER_INITIATOR = "not an origin"
REPLY_TIMEOUT_S = 30.0
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-extension:")


def _chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = _chromium()
    if binary is None:
        pytest.skip(
            "Chromium not found (looked for /usr/bin/chromium, chromium, chromium-browser): "
            "install Debian's package with `apt-get install -y chromium` (.ci/run does this)"
        )
    return binary


def run_chromium(
    binary: str, url: str, profile: Path, *extra: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """One headless Chromium with a fresh profile and every host name resolving to nothing."""
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        # Any attempt to reach a host fails to resolve, so nothing can leave even if asked for.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        # Tall enough that every card's lazy images are in the viewport and load.
        "--window-size=1280,4000",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    env = {**os.environ, "HOME": str(profile)}  # keep Chromium's crash/dbus chatter out of the real home
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def page_requests(net_log: Path) -> list[tuple[str, str]]:
    """(initiator, url) of every URL request the net log recorded."""
    data = json.loads(net_log.read_text(encoding="utf-8"))
    start_job = data["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        (str(e["params"].get("initiator")), str(e["params"]["url"]))
        for e in data["events"]
        if e["type"] == start_job and "url" in (e.get("params") or {})
    ]


def non_local_page_requests(net_log: Path) -> list[str]:
    return [
        url
        for initiator, url in page_requests(net_log)
        if not url.startswith(LOCAL_SCHEMES) and initiator != BROWSER_INITIATOR
    ]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[GeneratedRun, Path]:
    tmp = tmp_path_factory.mktemp("browser")
    generated = make_generated_run(tmp)
    engine = init_db(generated.db_url)
    with make_session_factory(engine)() as session:
        index = report.build_gallery(session, run_id=generated.run_id, out_dir=tmp / "gallery")
    engine.dispose()
    return generated, index


def test_gallery_loads_every_image_and_card_without_network(
    chromium: str, gallery: tuple[GeneratedRun, Path], tmp_path: Path
) -> None:
    generated, index = gallery
    net_log = tmp_path / "net.json"
    result = run_chromium(
        chromium, index.as_uri(), tmp_path / "profile", f"--log-net-log={net_log}", "--dump-dom"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    root = re.search(r"<html[^>]*>", dom)
    assert root is not None, dom[:500]
    attrs = dict(re.findall(r'(data-images-[a-z]+)="(\d+)"', root.group(0)))
    # The counters are written by the page's own script: present means the CSP hash let it run.
    assert attrs, f"page script did not run (CSP?): {root.group(0)}"
    total, loaded = int(attrs["data-images-total"]), int(attrs["data-images-loaded"])
    assert attrs["data-images-broken"] == "0"
    assert total >= 5 * 4 and loaded == total, attrs

    cards = re.findall(r'<article class="card[^"]*" id="card-\d+"', dom)
    assert len(cards) == len(generated.succeeded) + len(generated.failed)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in dom
    assert re.search(r'<div id="controls"(?![^>]*hidden)', dom), "script should reveal the controls"
    assert re.search(r'<span id="shown">5 of 5</span>', dom)
    assert not re.search(r"https?://", dom)

    assert net_log.is_file()
    assert non_local_page_requests(net_log) == []


def test_screenshot_shows_the_pictures(
    chromium: str, gallery: tuple[GeneratedRun, Path], tmp_path: Path
) -> None:
    _generated, index = gallery
    shot = tmp_path / "shot.png"
    result = run_chromium(chromium, index.as_uri(), tmp_path / "profile", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert rgb.shape[1] == 1280
    assert float(rgb.std()) > 20.0, "screenshot is (nearly) blank"
    # The page's own chrome is grey with a few coloured badges; the generated photos are vivid.
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert float(np.mean(saturation > 80)) > 0.05, "too few coloured pixels: images did not render"


def test_works_without_javascript(chromium: str, gallery: tuple[GeneratedRun, Path], tmp_path: Path) -> None:
    """The page with its script forbidden still shows every card and picture.

    Chromium's own switch (--blink-settings=scriptEnabled=false) also stops headless --dump-dom
    and --screenshot, so a copy of the page whose CSP says script-src 'none' stands in for it.
    """
    generated, index = gallery
    html = index.read_text(encoding="utf-8")
    no_js, count = re.subn(r"script-src &#x27;sha256-[^&]+&#x27;", "script-src &#x27;none&#x27;", html)
    assert count == 1
    page = index.with_name("index-nojs.html")
    page.write_text(no_js, encoding="utf-8")
    dom = run_chromium(chromium, page.as_uri(), tmp_path / "p1", "--dump-dom").stdout
    assert "<main" in dom, dom[:300]
    assert "data-images-total" not in dom  # the script really did not run
    assert len(re.findall(r'<article class="card', dom)) == len(generated.succeeded) + len(generated.failed)
    assert re.search(r'<div id="controls" hidden', dom)  # sort/filter stay out of the way
    assert 'href="#card-1"' in dom  # plain links still flip between cards
    shot = tmp_path / "nojs.png"
    result = run_chromium(chromium, page.as_uri(), tmp_path / "p2", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert float(np.mean(saturation > 80)) > 0.05, "images did not render without JavaScript"


class DevTools:
    """The Chrome DevTools Protocol over --remote-debugging-pipe (fd 3 in, fd 4 out; NUL-framed
    JSON): enough to evaluate JavaScript and press keys, with the standard library only."""

    def __init__(self, to_browser: Any, from_browser: Any) -> None:
        self._out, self._in, self._buffer, self._id = to_browser, from_browser, b"", 0
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                # A hung browser must fail the test, not block it forever.
                if not select.select([self._in], [], [], REPLY_TIMEOUT_S)[0]:
                    raise TimeoutError(f"no DevTools reply to {method} within {REPLY_TIMEOUT_S} s")
                chunk = self._in.read(1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def press(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code},
            )


@contextmanager
def devtools(binary: str, url: str, profile: Path) -> Iterator[DevTools]:
    to_read, to_browser = os.pipe()
    from_browser, to_write = os.pipe()

    def wire() -> None:  # in the child, before exec: the pipe protocol's fixed descriptors
        os.dup2(to_read, 3)
        os.dup2(to_write, 4)

    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1280,1000",
        "--remote-debugging-pipe",
        url,
    ]
    process = subprocess.Popen(
        args,
        pass_fds=(3, 4, to_read, to_write),
        preexec_fn=wire,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(profile)},
    )
    os.close(to_read)
    os.close(to_write)
    with os.fdopen(to_browser, "wb", buffering=0) as out, os.fdopen(from_browser, "rb", buffering=0) as inp:
        tools = DevTools(out, inp)
        try:
            page = next(t for t in tools.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
            tools.session = tools.send(
                "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
            )["sessionId"]
            deadline = time.monotonic() + 20
            while (
                tools.evaluate("document.readyState === 'complete' && !!document.getElementById('cards')")
                is not True
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not finish loading")
                time.sleep(0.05)
            yield tools
        finally:
            with suppress(RuntimeError, OSError):  # already gone is fine
                tools.send("Browser.close")
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_keyboard_flipping_sorting_and_filtering(
    chromium: str, gallery: tuple[GeneratedRun, Path], tmp_path: Path
) -> None:
    _generated, index = gallery
    with devtools(chromium, index.as_uri(), tmp_path / "profile") as page:
        order = "Array.from(document.querySelectorAll('article.card')).filter(c => !c.hidden)"
        assert page.evaluate(f"{order}.length") == 5
        page.press("ArrowRight", 39)  # from the top: the first card
        page.press("ArrowRight", 39)
        page.press("ArrowRight", 39)
        assert page.evaluate("location.hash") == "#card-2"
        assert page.evaluate("document.activeElement.id") == "card-2"
        page.press("ArrowLeft", 37)
        assert page.evaluate("location.hash") == "#card-1"

        def choose(select: str, value: str) -> None:
            page.evaluate(
                f"(() => {{ const s = document.getElementById('{select}'); s.value = '{value}';"
                " s.dispatchEvent(new Event('change')); })()"
            )

        choose("sort-by", "gain")
        gains = page.evaluate(f"{order}.map(c => c.dataset.gain)")
        numeric = [float(g) for g in gains if g]
        assert numeric == sorted(numeric, reverse=True) and gains[-1] == ""  # the failure has no gain
        choose("sort-by", "relevance")
        relevances = [float(r) for r in page.evaluate(f"{order}.map(c => c.dataset.relevance)")]
        assert relevances == sorted(relevances, reverse=True)
        choose("sort-by", "failures")
        assert page.evaluate(f"{order}[0].dataset.status") == "failed"
        choose("show", "problem")
        assert page.evaluate(f"{order}.map(c => c.dataset.status)") == ["failed"]
        assert page.evaluate("document.getElementById('shown').textContent") == "1 of 5"
        choose("show", "all")
        # The per-card "next" links follow the order on screen.
        first, second = page.evaluate(f"{order}.slice(0, 2).map(c => c.id)")
        assert page.evaluate(
            f"document.getElementById('{first}').querySelector('a.next').getAttribute('href')"
        ) == (f"#{second}")


def test_network_check_catches_a_page_that_reaches_out(chromium: str, tmp_path: Path) -> None:
    """Negative control: the net-log check above must fail for a page with remote URLs."""
    page = tmp_path / "leaky.html"
    page.write_text(
        '<!doctype html><img src="https://cdn.example.org/a.png"><img src="http://example.com/b.png">'
    )
    net_log = tmp_path / "net.json"
    run_chromium(chromium, page.as_uri(), tmp_path / "profile", f"--log-net-log={net_log}", "--dump-dom")
    leaked = non_local_page_requests(net_log)
    assert "https://cdn.example.org/a.png" in leaked and "http://example.com/b.png" in leaked
