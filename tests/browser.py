"""Headless Chromium for the tests: open a local HTML page as a person's browser would and report
what it saw (images, links, console errors, page width) plus a screenshot.

Chromium is driven over the DevTools protocol (CDP) with a small WebSocket client from the
standard library, so the tests need nothing beyond Debian's ``chromium`` package.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

#: Chromium's executable names on Debian/Ubuntu and elsewhere.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1280, 900

#: What the page reports about itself, evaluated in the page once it has loaded.
INSPECT = """JSON.stringify({
  images: [...document.images].map(i => ({src: i.getAttribute('src').slice(0, 40), complete: i.complete,
                                          width: i.naturalWidth, shown: i.getBoundingClientRect().width})),
  links: [...document.querySelectorAll('a[href]')].map(a => ({href: a.getAttribute('href'), url: a.href})),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
  wide: [...document.querySelectorAll('body > *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
          .map(e => e.tagName + ' ' + e.textContent.slice(0, 60)),
})"""


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class _WebSocket:
    """Just enough RFC 6455 for CDP: masked text frames out, text frames (maybe fragmented) in."""

    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools connection during the handshake")
            response += chunk
        status = response.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"DevTools refused the WebSocket: {status!r}")
        self.buffer = response.split(b"\r\n\r\n", 1)[1]

    def _exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, text: str, opcode: int = 1) -> None:
        payload = text.encode()
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._exact(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if second & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 8:
                raise ConnectionError("Chromium closed the DevTools connection")
            if opcode == 9:  # ping
                self.send(payload.decode(errors="replace"), opcode=10)
                continue
            message += payload
            if first & 0x80:
                return message.decode()


class Page:
    """One tab of a headless Chromium started for it; ``close`` ends the browser."""

    def __init__(self, chromium: str, timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="rnnforge-chromium-")
        self.process = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",  # root in a container has no user namespace for the sandbox
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        port, seen = None, []
        deadline = time.monotonic() + timeout
        while port is None and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            if match := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
                port = int(match.group(1))
        if port is None:
            self.close()
            raise RuntimeError("Chromium did not start: " + "".join(seen[-5:]).strip())
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout).read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = _WebSocket(page["webSocketDebuggerUrl"], timeout)
        self.next_id = 0
        self.events: list[dict] = []
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for message in self.events:
                if message.get("method") == event:
                    return message
            self.events.append(json.loads(self.ws.receive()))
        raise TimeoutError(f"no {event} within {self.timeout} s")

    def open(self, path: Path) -> dict:
        """Load ``path``; return what the page says about itself plus ``errors`` (console)."""
        self.events.clear()
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        found = json.loads(self.call("Runtime.evaluate", expression=INSPECT, returnByValue=True)["result"]["value"])
        found["errors"] = console_errors(self.events)
        return found

    def screenshot(self, target: Path) -> Path:
        """The whole page (not only the window) as a PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 20000), "scale": 1}
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        target.write_bytes(base64.b64decode(shot["data"]))
        return target

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def console_errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads among CDP events."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}".strip())
    return errors


def local_link_problems(page: dict, page_path: Path) -> list[str]:
    """Links of ``page`` (from ``Page.open``) to local files that do not exist, or to an anchor
    the page lacks."""
    problems = []
    for link in page["links"]:
        parts = urllib.parse.urlparse(link["url"])
        if link["href"].startswith("#"):
            if link["href"][1:] not in page["ids"]:
                problems.append(f"{link['href']}: no such anchor in {page_path.name}")
        elif parts.scheme == "file":
            target = Path(urllib.parse.unquote(parts.path))
            if not target.exists():
                problems.append(f"{link['href']}: {target} does not exist")
    return problems
