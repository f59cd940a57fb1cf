"""Streams for the live tests, made by PyAV (FFmpeg's muxers): a file remuxed (packets copied, so
every decoded frame is the file's own) to MPEG-TS in memory, over UDP, or served over HTTP.

`python -m tests.stream_senders udp://HOST:PORT FILE [REPEAT]` pushes FILE at its own pace (a
process the tests kill and restart)."""
import contextlib
import http.server
import io
import sys
import threading
import time

import av


def remux(path, target, format="mpegts", realtime=False, repeat=1, options=None):
    """Copy `path`'s video packets into `target` (a URL or a file object) as `format`; with
    `realtime`, at their own pace. `repeat` plays it that many times, timestamps continued."""
    with av.open(str(path)) as source, av.open(target, "w", format=format, options=options or {}) as sink:
        stream = source.streams.video[0]
        out = sink.add_stream_from_template(stream)
        packets = [p for p in source.demux(stream) if p.dts is not None]
        span = max(p.pts for p in packets) - min(p.dts for p in packets) + packets[1].duration if len(packets) > 1 else 1
        started = time.monotonic()
        for turn in range(repeat):
            for packet in packets:
                shift = turn * span
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts, copy.time_base = packet.pts + shift, packet.dts + shift, packet.time_base
                copy.is_keyframe = packet.is_keyframe
                copy.stream = out
                if realtime:
                    time.sleep(max(0.0, started + float((copy.dts - packets[0].dts) * packet.time_base) - time.monotonic()))
                sink.mux(copy)


def mpegts_bytes(path, repeat=1):
    """The file's video as MPEG-TS bytes (what `ffmpeg -c copy -f mpegts -` writes)."""
    buffer = io.BytesIO()
    remux(path, buffer, repeat=repeat)
    return buffer.getvalue()


@contextlib.contextmanager
def http_server(body, name="stream.ts"):
    """Serve `body` at http://127.0.0.1:PORT/NAME (yields that URL)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != f"/{name}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{name}"
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    url, path = sys.argv[1], sys.argv[2]
    remux(path, url, realtime=True, repeat=int(sys.argv[3]) if len(sys.argv) > 3 else 1)
