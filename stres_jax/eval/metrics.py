"""Clip- and video-level accuracy from per-video records (the lines of predictions.jsonl)."""
import collections

import numpy as np

from stres_jax.errors import UserError
from stres_jax.inference import top_k


def video_record(item, outputs, labels, crops=1):
    """One predictions.jsonl line: the video's true label, top-5, and its clips' hits. With
    `crops`, consecutive rows are one temporal clip's spatial views, averaged for its hits."""
    if isinstance(outputs, UserError):
        return {"video": item.key, "label": item.label, "error": str(outputs)}
    view_probs = np.asarray(outputs["probabilities"], np.float64)
    mean = view_probs.mean(axis=0)
    clip_probs = view_probs.reshape(-1, crops, view_probs.shape[-1]).mean(axis=1)
    clip_top5 = np.argsort(-clip_probs, axis=1, kind="stable")[:, :5]
    truth = labels.index(item.label) if item.label in labels else -1
    return {"video": item.key, "label": item.label,
            "top5": top_k(mean, labels, 5),
            "num_clips": len(clip_probs),
            "clip_hits1": int((clip_top5[:, 0] == truth).sum()),
            "clip_hits5": int((clip_top5 == truth).any(axis=1).sum())}


COUNTS = ("num_videos", "video_hits1", "video_hits5", "num_clips", "clip_hits1", "clip_hits5", "num_skipped")


def record_counts(record):
    """One record's contribution to `COUNTS`, as an int64 vector (summable over videos and hosts)."""
    if "error" in record:
        return np.array([0, 0, 0, 0, 0, 0, 1], np.int64)
    labels = [t["label"] for t in record["top5"]]
    return np.array([1, labels[0] == record["label"], record["label"] in labels, record["num_clips"],
                     record["clip_hits1"], record["clip_hits5"], 0], np.int64)


def accuracies(counts):
    """{COUNTS..., "video_acc1", "video_acc5", "clip_acc1", "clip_acc5"} from summed `record_counts`."""
    totals = dict(zip(COUNTS, (int(c) for c in counts)))
    videos, clips = max(totals["num_videos"], 1), max(totals["num_clips"], 1)
    return {**totals, "clip_acc1": totals["clip_hits1"] / clips, "clip_acc5": totals["clip_hits5"] / clips,
            "video_acc1": totals["video_hits1"] / videos, "video_acc5": totals["video_hits5"] / videos}


def summarize(records):
    """results.json: counts, clip and video acc@1/@5, per-class video acc@1, skipped videos."""
    records = list(records)
    totals = accuracies(sum((record_counts(r) for r in records), np.zeros(len(COUNTS), np.int64)))
    per_class = collections.defaultdict(list)
    for record in records:
        if "error" not in record and record["label"] is not None:
            per_class[record["label"]].append(record["top5"][0]["label"] == record["label"])
    return {"num_videos": totals["num_videos"], "num_clips": totals["num_clips"],
            **{key: totals[key] for key in ("clip_acc1", "clip_acc5", "video_acc1", "video_acc5")},
            "per_class": {label: {"videos": len(h), "acc1": sum(h) / len(h)} for label, h in sorted(per_class.items())},
            "skipped": [{"video": r["video"], "reason": r["error"]} for r in records if "error" in r]}
