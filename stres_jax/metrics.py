"""Top-k, and clip- and video-level accuracy from per-video records (the lines of predictions.jsonl)."""
import collections

import numpy as np

from stres_jax.errors import UserError


def top_k(probabilities, labels, k):
    """[{"label", "probability"}] of the `k` largest entries of a probability vector."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [{"label": labels[i], "probability": float(probabilities[i])} for i in order]


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


def summarize(records):
    """results.json: counts, clip and video acc@1/@5, per-class video acc@1, skipped videos."""
    scored = [r for r in records if "error" not in r]
    skipped = [{"video": r["video"], "reason": r["error"]} for r in records if "error" in r]
    clips = sum(r["num_clips"] for r in scored)
    hits1 = [r["top5"][0]["label"] == r["label"] for r in scored]
    hits5 = [any(t["label"] == r["label"] for t in r["top5"]) for r in scored]
    per_class = collections.defaultdict(list)
    for record, hit in zip(scored, hits1):
        if record["label"] is not None:
            per_class[record["label"]].append(hit)

    def ratio(numerator, denominator):
        return float(numerator) / denominator if denominator else 0.0
    return {"num_videos": len(scored), "num_clips": clips,
            "clip_acc1": ratio(sum(r["clip_hits1"] for r in scored), clips),
            "clip_acc5": ratio(sum(r["clip_hits5"] for r in scored), clips),
            "video_acc1": ratio(sum(hits1), len(scored)), "video_acc5": ratio(sum(hits5), len(scored)),
            "per_class": {label: {"videos": len(h), "acc1": ratio(sum(h), len(h))}
                          for label, h in sorted(per_class.items())},
            "skipped": skipped}
