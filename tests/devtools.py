"""Headless Chromium driven over the DevTools protocol on a pipe: no driver and no extra package.

With ``--remote-debugging-pipe`` Chromium reads protocol messages from its fd 3 and writes
them to fd 4, each a JSON object ending in a NUL byte. A reader thread sorts what comes
back into command replies and events; the test reads the events to see every request a
page made.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

# These work as root on this kind of machine; the networking ones keep Chromium from calling
# home, which on a closed network shows up as refused connections and slow starts.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
]


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


class DevToolsError(RuntimeError):
    """Chromium answered a command with an error, or did not answer in time."""


class Chromium:
    """One headless Chromium with one page, as a context manager.

    >>> with Chromium() as browser:
    ...     browser.goto("http://127.0.0.1:8000/")
    ...     browser.evaluate("document.title")
    """

    def __init__(
        self,
        executable: str | None = None,
        width: int = 1280,
        height: int = 860,
        timeout: float = 60.0,
    ) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError(
                "chromium not found: apt-get install -y chromium chromium-driver"
            )
        self.size, self.timeout = (width, height), timeout
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self.session: str | None = None

    def __enter__(self) -> Chromium:
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_child, self._to_browser = os.pipe()
        self._from_browser, from_child = os.pipe()

        def wire_pipes() -> (
            None
        ):  # in the child: the protocol's fixed descriptors 3 and 4
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.process = subprocess.Popen(
            [
                self.executable,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=wire_pipes,  # our own descriptors are non-inheritable (PEP 446)
        )
        os.close(to_child)
        os.close(from_child)
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.size[0],
            height=self.size[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call("Browser.close", session=False)
        except (DevToolsError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        box = self._replies.get(message["id"])
                    if box is not None:
                        box.put(message)
                elif message.get("sessionId") == self.session:
                    with self._lock:
                        self.events.append(message)
                    if message["method"] == "Page.loadEventFired":
                        self._loaded.set()
        os.close(self._from_browser)

    def call(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send one protocol command (to the page's session unless ``session=False``) and return its result."""
        message: dict[str, Any] = {
            "id": next(self._ids),
            "method": method,
            "params": params,
        }
        if session and self.session is not None:
            message["sessionId"] = self.session
        box: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._replies[message["id"]] = box
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            reply = box.get(timeout=self.timeout)
        except queue.Empty:
            raise DevToolsError(
                f"{method}: no answer from Chromium within {self.timeout:.0f} s"
            ) from None
        finally:
            with self._lock:
                del self._replies[message["id"]]
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def goto(self, url: str) -> list[dict[str, Any]]:
        """Open ``url``, wait for its load event, and return the protocol events it caused."""
        with self._lock:
            self.events = []
        self._loaded.clear()
        result = self.call("Page.navigate", url=url)
        if "errorText" in result:
            raise DevToolsError(f"{url}: {result['errorText']}")
        if not self._loaded.wait(self.timeout):
            raise DevToolsError(f"{url}: no load event within {self.timeout:.0f} s")
        with self._lock:
            return list(self.events)

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page, awaiting a promise, and return the value as JSON."""
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise DevToolsError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requests(self) -> list[dict[str, Any]]:
        """Every request the page made since the last :meth:`goto`, including those made after load."""
        with self._lock:
            events = list(self.events)
        seen: dict[str, dict[str, Any]] = {}
        for event in events:
            p = event.get("params", {})
            if event["method"] == "Network.requestWillBeSent":
                seen[p["requestId"]] = {
                    "url": p["request"]["url"],
                    "status": None,
                    "failed": None,
                }
            elif event["method"] == "Network.responseReceived" and p["requestId"] in seen:
                seen[p["requestId"]]["status"] = p["response"]["status"]
            elif event["method"] == "Network.loadingFailed" and p["requestId"] in seen:
                seen[p["requestId"]]["failed"] = p["errorText"]
        return list(seen.values())

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
