"""`stres-jax live --serve`: a read-only page pushed by server-sent events.

The standard library's threading HTTP server is enough here: three routes (the page, the event
stream, each source's newest frame as JPEG), nothing read from disk but the page itself."""
import http.server
import json
import threading
from importlib import resources

import numpy as np

STRIP = 240  # windows of top-1 history each source keeps for its strip


class LivePage:
    """`with LivePage((host, port), sources, labels) as page: page.update(result)`."""

    def __init__(self, address, sources, labels):
        self.sources, self.labels = list(sources), labels
        self.state = [{"source": s, "index": i, "strip": []} for i, s in enumerate(self.sources)]
        self.frames = [b""] * len(self.sources)
        self.version, self.changed, self.closing = 0, threading.Condition(), False
        import cv2  # JPEG frames; imported now, not inside the loop
        self.cv2 = cv2
        self.html = resources.files("stres_jax.live").joinpath("page.html").read_bytes()
        handler = type("Handler", (_Handler,), {"page": self})
        try:
            self.server = http.server.ThreadingHTTPServer(address, handler)
        except OSError as err:
            from stres_jax.errors import UserError
            raise UserError(f"--serve {address[0]}:{address[1]}: cannot listen there ({err.strerror})") from None
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, name="live-page", daemon=True).start()
        return self

    def __exit__(self, *exc):
        with self.changed:
            self.closing = True
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def update(self, result):
        """A window's answer: the source's bars, labels, latency, skips, strip and frame."""
        index = self.sources.index(result["source"])
        best = result["top"][0]
        state = self.state[index]
        state.update({key: result[key] for key in ("start", "end", "latency", "skipped", "top", "averaged")})
        state["strip"] = (state["strip"] + [[result["end"], best["label"], round(best["probability"], 4)]])[-STRIP:]
        if "frame" in result:
            ok, jpeg = self.cv2.imencode(".jpg", np.ascontiguousarray(result["frame"][..., ::-1]))
            self.frames[index] = jpeg.tobytes() if ok else b""
        with self.changed:
            self.version += 1
            state["version"] = self.version
            self.changed.notify_all()

    def events(self, last):
        """The state after version `last`, waiting up to 10 s (None: closing; [] to keep alive)."""
        with self.changed:
            self.changed.wait_for(lambda: self.version > last or self.closing, timeout=10)
            if self.closing and self.version <= last:  # the last answers go out first
                return None
            return [dict(s) for s in self.state if s.get("version", 0) > last]


class _Handler(http.server.BaseHTTPRequestHandler):
    page = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the terminal shows the windows
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(200, "text/html; charset=utf-8", self.page.html)
        if path == "/events":
            return self._events()
        if path.startswith("/frame/") and path.endswith(".jpg") and path[7:-4].isdigit():
            index = int(path[7:-4])
            if index < len(self.page.frames) and self.page.frames[index]:
                return self._send(200, "image/jpeg", self.page.frames[index])
        self._send(404, "text/plain", b"not found")

    def _send(self, status, kind, body):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _events(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(b"retry: 1000\n\n")
        last = self.page.version  # before the state is sent: nothing newer is missed
        hello = {"sources": self.page.sources}
        try:
            self.wfile.write(f"event: hello\ndata: {json.dumps(hello)}\n\n".encode())
            for state in self.page.state:
                self.wfile.write(f"data: {json.dumps(state)}\n\n".encode())
            self.wfile.flush()
            while True:
                changed = self.page.events(last)
                if changed is None:
                    return
                last = max([last] + [s["version"] for s in changed])
                self.wfile.write(b"".join(f"data: {json.dumps(s)}\n\n".encode() for s in changed) or b": alive\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
