"""The main action of a video, its top-k labels, and the action over time (windows)."""
import dataclasses
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stres_jax.data.decode import probe
from stres_jax.data.sampling import ClipPlan
from stres_jax.data.clips import stream_task
from stres_jax.data.readers import probe_task


RANDOM_WEIGHTS = "random weights (--random-init): the labels mean nothing"


@dataclasses.dataclass
class PlanOutputs:
    """Everything the net said about one video by a `ClipPlan`, in one decoding pass."""
    info: object                 # the video's VideoInfo
    main_probs: np.ndarray       # (clips x crops, classes) softmax of every main view
    main_features: np.ndarray    # (clips x crops, width) pooled features
    spans: list                  # [(first frame, end frame, indices)] of the windows
    window_probs: np.ndarray     # (windows, classes)
    window_features: np.ndarray  # (windows, width)
    window_frames: np.ndarray    # (windows, 112, 112, 3) uint8: each window clip's middle frame

    def window_times(self):
        """[(start s, end s)] of the windows."""
        info = self.info
        return [(round(float(info.times[s]), 3),
                 round(float(info.times[e]) if e < info.num_frames else info.duration, 3))
                for s, e, _ in self.spans]


def run_plan(runner, path, plan=ClipPlan(), progress=False, main=True, workers=None):
    """Run a `ClipRunner` over the clips `plan` picks from the video at `path` (streamed: memory
    does not grow with the video's length); raises VideoError if the video is unusable.
    `main=False` runs only the windows. With `workers` (data.workers.DecodeWorkers) decoding
    happens in a worker process, so a decoder crash or hang costs only this video."""
    info = list(workers.run(path, probe_task, path))[0] if workers else probe(path)
    main = plan.main_clips(info) if main else np.zeros((0, plan.clip_len), np.int64)
    spans = plan.windows(info)
    jobs = [(("main", i), idx) for i, idx in enumerate(main)]
    jobs += [(("window", k), idx) for k, (_, _, idx) in enumerate(spans)]
    classes, crops, width = len(runner.labels), plan.crops, runner.model.feature_width
    out = PlanOutputs(info, np.zeros((len(main) * crops, classes), np.float32), np.zeros((len(main) * crops, width), np.float32),
                      spans, np.zeros((len(spans), classes), np.float32), np.zeros((len(spans), width), np.float32),
                      np.zeros((len(spans), plan.preset.crop, plan.preset.crop, 3), np.uint8))
    last = max((int(idx.max()) for _, idx in jobs), default=0)
    arguments = (path, jobs, runner.batch_size, crops, plan.preset)
    source = workers.run(path, stream_task, *arguments) if workers else stream_task(*arguments)
    with tqdm(total=last + 1, desc=str(path), unit="frame", disable=not progress, leave=False) as bar:
        for decoded, batch in source:
            bar.update(decoded + 1 - bar.n)
            rows = [(key, view) for key, clip in batch for view in (clip if crops > 1 else [clip])]
            probabilities, features = runner.run(np.stack([view for _, view in rows]))
            counts = {}
            for ((kind, i), view), p, f in zip(rows, probabilities, features):
                v = counts[(kind, i)] = counts.get((kind, i), -1) + 1
                if kind == "main":
                    out.main_probs[i * crops + v], out.main_features[i * crops + v] = p, f
                else:
                    out.window_probs[i], out.window_features[i] = p, f
                    out.window_frames[i] = view[len(view) // 2]
    return out


def predict_video(runner, path, plan=ClipPlan(), top=5, progress=False, plot=None, workers=None, overwrite=False):
    """{"video", "top", "clips", "crops", "duration"[, "windows"]} for one video by a
    `ClipPlan`, with a `ClipRunner`; the score is the mean softmax over every clip and crop.
    `plot`: a PNG path for the action over time (the windows' thumbnails and labels, and the
    probabilities of the leading classes as curves)."""
    out = run_plan(runner, path, plan, progress, workers=workers)
    result = {"video": str(path), "top": runner.top(out.main_probs.mean(axis=0), top),
              "clips": len(out.main_probs) // plan.crops, "crops": plan.crops, "duration": round(out.info.duration, 3)}
    if runner.net.random_weights:
        result["weights"] = RANDOM_WEIGHTS
    if out.spans:
        result["windows"] = [{"start": start, "end": end, **runner.top(p, 1)[0]}
                             for (start, end), p in zip(out.window_times(), out.window_probs)]
        if plot:
            from stres_jax.figures import save_action_over_time, window_curves  # matplotlib only when drawing
            best = result["top"][0]
            curves = window_curves(result["windows"], out.window_probs, list(runner.labels), best["label"])
            overall = marked(f"{Path(path).name}: {best['label']} ({best['probability']:.3f}) overall", result)
            save_action_over_time(out.window_frames, result["windows"], curves, plot, f"{overall}; per window:", overwrite=overwrite)
            result["plot"] = str(plot)
    return result


def marked(text, result):
    """`text`, flagged when the answer came from random weights (`--random-init`)."""
    return f"{text} [{result['weights']}]" if "weights" in result else text


def format_text(result, top):
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"
    best = result["top"][0]
    lines = [marked(f"{result['video']}: {best['label']} ({best['probability']:.3f})", result)]
    if top > 1:
        lines += [f"  {t['probability']:.4f}  {t['label']}" for t in result["top"]]
    for w in result.get("windows", []):
        span = f"{w['start']:.2f}-{w['end']:.2f} s"
        lines.append(f"  {span:>17}  {w['label']} ({w['probability']:.2f})")
    return "\n".join(lines)
