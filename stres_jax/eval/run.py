"""Kinetics-400 evaluation, data-parallel over every device and host, resumable.

`python -m stres_jax.eval --config configs/r2plus1d.py --workdir W` runs `evaluate`, which
writes `predictions.jsonl` (one line per video) and `results.json` to the workdir. Each process appends its videos to its own `predictions-PPPPP.jsonl` shard, flushed per
video, so a killed run started again with the same workdir resumes where it stopped.
"""
import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import numpy as np

from stres_jax.runtime.atomic import atomic_path, check_folder
from stres_jax.config.check import EVAL as EVAL_RULES
from stres_jax.config.check import check_config
from stres_jax.data.sampling import ClipPlan
from stres_jax.data.sources import make_source, source_of
from stres_jax.data.transforms import clip_shape
from stres_jax.data.workers import DecodeWorkers
from stres_jax.runtime.distributed import initialize_distributed
from stres_jax.inference import forward_fn
from stres_jax.loader import ModelOptions, load_net
from stres_jax.runtime.mesh import DataParallel, data_shardings
from stres_jax.eval.metrics import summarize, video_record
from stres_jax.data.pipeline import clip_loader, decoded_videos, run_videos
from stres_jax.runtime.progress import progress
from stres_jax.eval.records import COMBINED, open_shard, read_records, remove_shards
from stres_jax.runtime.interrupt import GracefulStop, Stopped, resume_command
from stres_jax.runtime.workdir import claim_workdir, clear_workdir, weights_fingerprint
from stres_jax.runtime.xla_options import compiler_options

RESULT_FILES = ("predictions*.jsonl", "results.json")


def evaluate(config, workdir, items=None, embeddings=False, net=None):
    """Run the protocol over `items` (default: the config's source); on process 0 returns
    the results dict. With `embeddings`, each record also holds the video's pooled
    512-d features averaged over its clips. `net`: the `load_net` of the config's model
    options, when the caller has loaded it already.
    """
    check_config(config, EVAL_RULES)
    plan = ClipPlan.from_protocol(config.protocol)
    if items is None:
        source_of(config.data).check_plan(config.data, plan)
    initialize_distributed(config.distributed)
    workdir = check_folder(Path(workdir))
    data_shardings(config.batch_size)  # the batch divides among the devices, before anything slow
    net = net or load_net(ModelOptions.from_config(config))
    model, variables, labels = net.model, net.variables, net.labels
    plan = dataclasses.replace(plan, preset=net.preset)  # the net's pixels, values and sampling rule
    if items is None:
        source_of(config.data).check_plan(config.data, plan)  # a clip store made for another preset
    identity = run_identity(config, net, embeddings, given_items=items is not None)
    if config.fresh:
        clear_workdir(workdir, RESULT_FILES)
    items = make_source(config.data, labels) if items is None else items  # its classes checked: before the claim
    claim_workdir(workdir, identity, "predictions*.jsonl", "pass --fresh (--config.fresh=True) to start it afresh")
    done = read_records(workdir)
    mine = [item for item in items if item.key not in done][jax.process_index()::jax.process_count()]
    parallel = DataParallel(forward_fn(model), variables, config.batch_size, compiler_options(config.cpu_library))
    kind = "embed" if embeddings else "eval"
    stop = GracefulStop(f"stres-jax {kind}", "stopping after the batch in flight (every answered video is kept)")
    with stop, DecodeWorkers(config.num_workers) as workers, open_shard(workdir, jax.process_index()) as shard, \
            progress(len(mine), kind, "video", show=jax.process_index() == 0) as bar:
        stop.on_stop = stop.on_exit = workers.stop
        def on_video(item, outputs):
            record = video_record(item, outputs, labels, plan.crops)
            if embeddings and "error" not in record:
                record["embedding"] = np.asarray(outputs["features"], np.float32).mean(0).tolist()
            shard.write(json.dumps(record) + "\n")
            shard.flush()
            bar.update()
        videos = decoded_videos(mine, clip_loader(plan, workers), config.num_workers, config.prefetch)
        run_videos(videos, parallel, clip_shape(plan.clip_len, crop=net.preset.crop), on_video,
                   stopped=lambda: bool(stop), preset=net.preset)
    answered = len(read_records(workdir)) if stop else len(items)
    if answered < len(items):  # a signal cut it short (with every video answered, it just finishes)
        raise Stopped(f"stopped by {stop.name} with {answered} of {len(items)} videos answered, each kept in "
                      f"{workdir}; to finish, run the same command again: {resume_command()}", stop.exit_status)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("stres_jax.eval finished")
    if jax.process_index() != 0:
        return None
    results = write_results(workdir, [read_records(workdir).get(item.key) for item in items],
                            {**identity, "checkpoint": str(net.directory or "random init")})
    remove_shards(workdir)  # predictions.jsonl holds them all now
    return results


def run_identity(config, net, embeddings, given_items):
    """What makes a workdir's records: the net, its weights and options, labels, protocol and data."""
    data = "videos given by the caller" if given_items else source_of(config.data).identity(config.data)
    return {"kind": "embed" if embeddings else "eval", **net.options.identity(net.arch),
            "weights_sha256": weights_fingerprint(net.variables),
            "labels_sha256": hashlib.sha256(json.dumps(list(net.labels)).encode()).hexdigest(),
            "protocol": config.protocol.to_dict(), "preset": net.preset.to_json(), "data": data}


def write_results(workdir, records, run=None):
    """predictions.jsonl (ordered as the source) and results.json (with `run`: what made
    them), each written atomically."""
    records = [r for r in records if r is not None]
    with atomic_path(Path(workdir) / COMBINED) as staging:
        staging.write_text("".join(json.dumps(r) + "\n" for r in records))
    results = summarize(records)
    if run is not None:
        results["run"] = run
    with atomic_path(Path(workdir) / "results.json") as staging:
        staging.write_text(json.dumps(results, indent=1))
    return results
