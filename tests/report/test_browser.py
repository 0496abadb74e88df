"""The report opened in headless Chromium: it renders, with its figures, and no console error.

Chromium is driven through the Chrome DevTools protocol (``--remote-debugging-port``) with a
small WebSocket client from the standard library: the test records every console message,
uncaught exception, browser log entry and network request while the page loads, then asks the
page whether each image decoded (``complete`` and ``naturalWidth > 0``). A control page with a
broken image, a console error and a remote request proves that the harness sees each of them.

``.ci/run`` installs Debian's ``chromium`` so that CI always runs this; elsewhere the test is
skipped with a message saying that the report was not rendered.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0")
TIMEOUT = 60.0


def _chromium() -> str:
    env = os.environ.get("IMHARMONY_CHROMIUM")
    for path in ((env,) if env else ()) + CHROMIUM_CANDIDATES:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("chromium")
    if found:
        return found
    pytest.skip(f"no chromium browser found at {', '.join(CHROMIUM_CANDIDATES)} or on PATH "
                "(set IMHARMONY_CHROMIUM): the report was not rendered in a browser")


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: masked text frames out, frames in."""

    def __init__(self, url: str, timeout: float) -> None:
        assert url.startswith("ws://"), url
        host_port, _, path = url[5:].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"WebSocket handshake refused: {status!r}")

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            buf += chunk
        return buf

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else b""
            data = self._exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (0x9, 0xA):  # ping / pong: not used by DevTools
                continue
            message += data
            if b0 & 0x80:  # FIN
                return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class PageLoad:
    """What happened while a page loaded."""

    console: list[tuple[str, str]] = field(default_factory=list)  # (type, text)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind in ("error", "assert")]


# Evaluated in the page after "load": every image decoded, and what the reader sees.
_PAGE_STATE = """JSON.stringify({
  title: document.title,
  images: Array.from(document.images).map(i => ({
      ok: i.complete && i.naturalWidth > 0 && i.naturalHeight > 0,
      width: i.naturalWidth, shown: i.getBoundingClientRect().width,
      alt: i.alt.slice(0, 40)})),
  sections: Array.from(document.querySelectorAll("section")).map(s => s.id),
  verdicts: Array.from(document.querySelectorAll(".card .verdict")).map(v => v.innerText),
  compares: (document.querySelector("header .compares") || {innerText: ""}).innerText,
  numbers: Array.from(document.querySelectorAll(".card .number")).map(n => n.innerText),
  height: document.documentElement.scrollHeight,
  overflowX: document.documentElement.scrollWidth > window.innerWidth + 1
})"""


class Browser:
    """One headless Chromium (started by this test, stopped by its process group id)."""

    def __init__(self, binary: str, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (profile / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--window-size=1200,900",
             "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}; see "
                                   f"{profile / 'chromium.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(  # the DevTools port, on localhost
            f"http://127.0.0.1:{self.port}/json/list", timeout=TIMEOUT))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = WebSocket(page["webSocketDebuggerUrl"], TIMEOUT)
        self._id = 0

    def _call(self, method: str, events: list[dict[str, Any]],
              params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            events.append(msg)

    def load(self, url: str) -> PageLoad:
        events: list[dict[str, Any]] = []
        for domain in ("Runtime", "Log", "Network", "Page"):
            self._call(f"{domain}.enable", events)
        self._call("Page.navigate", events, {"url": url})
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            events.append(json.loads(self.ws.recv()))
        # let late messages (image decoding errors, deferred logs) arrive, then look
        self._call("Runtime.evaluate", events, {"expression": "new Promise(r => "
                   "setTimeout(r, 200))", "awaitPromise": True})
        state = self._call("Runtime.evaluate", events,
                           {"expression": _PAGE_STATE, "returnByValue": True})
        out = PageLoad(state=json.loads(state["result"]["value"]))
        for e in events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
                out.console.append((p["type"], text))
            elif m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.exceptions.append(d.get("exception", {}).get("description", d["text"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.log_errors.append(p["entry"]["text"] + " " + p["entry"].get("url", ""))
            elif m == "Network.requestWillBeSent":
                out.requests.append(p["request"]["url"])
            elif m == "Network.loadingFailed":
                out.failed.append(p.get("errorText", ""))
        return out

    def close(self) -> None:
        self.ws.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    binary = _chromium()
    b = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


def test_report_renders_with_its_figures_and_no_console_error(browser: Browser,
                                                              rendered) -> None:
    url = rendered.html_path.resolve().as_uri()
    page = browser.load(url)
    assert page.console_errors == []
    assert page.exceptions == []
    assert page.log_errors == []
    assert page.failed == []
    # nothing fetched but the report itself and its inline data
    assert [u for u in page.requests if not u.startswith("data:")] == [url]
    state = page.state
    assert state["title"] == "Small cohort <test>"
    assert state["sections"] == ["verdict", "distributions", "pca", "fisher", "mixed",
                                 "confounding", "site-tests", "provenance"]
    assert [v.split()[-1] for v in state["verdicts"]] == ["REMOVED", "KEPT"]
    # what the page compares, under its title, and each number shown beside its threshold
    assert state["compares"] == "before = before.csv, after = after.csv"
    assert any("compared with 0.9–1.1" in n and "mixed-model coefficient" in n
               for n in state["numbers"]), state["numbers"]
    images = state["images"]
    assert len(images) == 4
    assert all(img["ok"] for img in images), images
    assert all(img["width"] > 300 and img["shown"] > 300 for img in images), images
    assert not state["overflowX"]  # fits a laptop-width window without sideways scrolling
    assert state["height"] > 3000  # the whole report laid out, not an error page


def test_the_harness_sees_broken_images_errors_and_requests(browser: Browser,
                                                            tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>control</title></head><body>"
        '<img src="data:image/png;base64,AAAA" alt="broken">'
        '<img src="http://127.0.0.1:9/absent.png" alt="remote">'
        "<script>console.error('control error'); undefinedFunction();</script>"
        "</body></html>"
    )
    page = browser.load(bad.resolve().as_uri())
    assert "control error" in page.console_errors
    assert any("undefinedFunction" in e for e in page.exceptions)
    assert "http://127.0.0.1:9/absent.png" in page.requests
    assert [img["ok"] for img in page.state["images"]] == [False, False]
