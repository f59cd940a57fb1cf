"""The main action of a video, its top-k labels, and the action over time (windows)."""
import numpy as np
from tqdm import tqdm

from stres_jax.data.clips import stream_clips
from stres_jax.data.decode import probe
from stres_jax.data.sampling import ClipPlan


def predict_video(runner, path, plan=ClipPlan(), top=5, progress=False):
    """{"video", "top", "clips"[, "windows"]} for one video by a `ClipPlan`, with a
    `ClipRunner`; raises VideoError if the video is unusable."""
    info = probe(path)
    main = plan.main_clips(info)
    spans = plan.windows(info)
    jobs = [(("main", i), idx) for i, idx in enumerate(main)]
    jobs += [(("window", k), idx) for k, (_, _, idx) in enumerate(spans)]
    main_probs = np.zeros((len(main), len(runner.labels)), np.float32)
    window_probs = np.zeros((len(spans), len(runner.labels)), np.float32)
    last = max(int(idx.max()) for _, idx in jobs)
    with tqdm(total=last + 1, desc=str(path), unit="frame", disable=not progress, leave=False) as bar:
        def advance(index):
            bar.update(index + 1 - bar.n)
        for batch in stream_clips(path, jobs, runner.batch_size, on_frame=advance):
            probabilities, _ = runner.run(np.stack([clip for _, clip in batch]))
            for ((kind, i), _), p in zip(batch, probabilities):
                (main_probs if kind == "main" else window_probs)[i] = p
    result = {"video": str(path), "top": runner.top(main_probs.mean(axis=0), top),
              "clips": len(main), "duration": round(info.duration, 3)}
    if spans:
        result["windows"] = [
            {"start": round(float(info.times[s]), 3),
             "end": round(float(info.times[e]) if e < info.num_frames else info.duration, 3),
             **runner.top(p, 1)[0]}
            for (s, e, _), p in zip(spans, window_probs)]
    return result


def format_text(result, top):
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"
    best = result["top"][0]
    lines = [f"{result['video']}: {best['label']} ({best['probability']:.3f})"]
    if top > 1:
        lines += [f"  {t['probability']:.4f}  {t['label']}" for t in result["top"]]
    for w in result.get("windows", []):
        lines.append(f"  {w['start']:8.2f}-{w['end']:<8.2f}s {w['label']} ({w['probability']:.2f})")
    return "\n".join(lines)
