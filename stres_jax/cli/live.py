"""`stres-jax live SOURCE...`: the action in cameras, network streams, pipes and files as it happens."""
from stres_jax.cli.options import (add_cpu_library_flag, add_model_flags, add_overwrite_flag, bounded_int,
                                   positive_int)
from stres_jax.data import sampling
from stres_jax.errors import UserError
from stres_jax.live.sources import NETWORK_SCHEMES, Source

LATENCY_MODEL = ("A window is computed on the newest frames; when the net is slower than the stream, windows "
                 "are skipped, never queued, so an answer is at most one window's compute time plus one stride "
                 "behind its frames. --no-skip computes every window in order (offline-exact, for files and pipes).")


def register(subparsers):
    parser = subparsers.add_parser(
        "live", help="name the action in cameras, network streams and pipes as it happens",
        description="Label the action in live sources as their frames arrive: windows of the net's clip length "
        "every --stride resampled frames (the net's preset: 15 fps, 128x171 then a 112 crop for the 18-layer "
        f"nets). {LATENCY_MODEL} Several sources share one batch of the net. Ends at the end of every stream "
        "or at Ctrl-C / SIGTERM, with a summary per source (exit 0, 130, 143; 1 if a source failed).")
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help=f"a URL FFmpeg reads ({', '.join(s + '://' for s in NETWORK_SCHEMES)}, HLS .m3u8), "
                        "- for a container on standard input, a video file, or a camera (/dev/video0, or 0)")
    add_model_flags(parser)
    parser.add_argument("--clip-len", type=bounded_int(sampling.MAX_CLIP_LEN), metavar="L",
                        help="resampled frames per window (default: the net's, 16 for the 18-layer nets)")
    parser.add_argument("--stride", type=bounded_int(sampling.MAX_CLIP_LEN), metavar="S",
                        help="resampled frames between window starts (default L/2)")
    parser.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per window, averaged")
    parser.add_argument("--top", type=positive_int, default=5, metavar="K", help="labels per window (default 5)")
    parser.add_argument("--average", type=bounded_int(1000), default=1, metavar="K",
                        help="also show the mean probabilities of the last K windows (default 1)")
    parser.add_argument("--no-skip", action="store_true", help="compute every window in order, however far "
                        "behind that falls (offline-exact runs over files and pipes)")
    parser.add_argument("--realtime", action="store_true", help="play a file at its own pace (default: as fast "
                        "as it decodes)")
    parser.add_argument("--jsonl", metavar="FILE", help="write one JSON line per window, flushed at once (- for "
                        "standard output): source, start, end, wall, latency, top, averaged, skipped")
    parser.add_argument("--serve", metavar="HOST:PORT", help="serve a live page (newest frame, top-5 bars, "
                        "averaged label, latency, skips, top-1 over time) at http://HOST:PORT/; bind 127.0.0.1 "
                        "unless you mean to share it")
    parser.add_argument("--stall-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="a network source without a frame for this long is reconnected (default 10)")
    parser.add_argument("--retries", type=bounded_int(1000, 0), default=5, metavar="N",
                        help="reconnections of a network source that drops, stalls or cannot be reached, with "
                        "backoff 1, 2, 4, 8, 16 s (default 5)")
    add_overwrite_flag(parser)
    add_cpu_library_flag(parser)
    parser.set_defaults(func=run)


def parse_sources(texts):
    """The sources, or a one-line error (an unknown scheme, - twice)."""
    sources = [Source.parse(text) for text in texts]
    if sum(s.kind == "stdin" for s in sources) > 1:
        raise UserError("- (standard input) can be given once")
    return sources


def run(args):
    from stres_jax.live.session import LiveSession
    if args.stall_timeout <= 0:
        raise UserError(f"--stall-timeout must be above 0 seconds, got {args.stall_timeout:g}")
    sources = parse_sources(args.sources)
    session = LiveSession(args, sources)
    return session.run()

