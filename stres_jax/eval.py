"""Kinetics-400 evaluation, data-parallel over every device and host, resumable.

    python -m stres_jax.eval --config configs/r2plus1d.py --workdir /tmp/w \\
        --config.checkpoint=DIR --config.data.root=ROOT

Writes `predictions.jsonl` (one line per video) and `results.json` to the workdir.
Each process appends its videos to its own `predictions-PPPPP.jsonl` shard, flushed per
video, so a killed run started again with the same workdir resumes where it stopped.
"""
import json
import sys
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from stres_jax.atomic import atomic_path
from stres_jax.data.clips import protocol_clips_of
from stres_jax.data.sources import make_source
from stres_jax.errors import UserError
from stres_jax.metrics import summarize, video_record
from stres_jax.parallel import DataParallel, decoded_videos, initialize_distributed, run_videos
from stres_jax.xla_options import compiler_options

SHARD_GLOB = "predictions-*.jsonl"


def read_records(workdir):
    """Every complete line of every shard in `workdir`, first occurrence of each video."""
    records = {}
    for shard in sorted(Path(workdir).glob(SHARD_GLOB)):
        for line in shard.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the half-written last line of a killed run
            records.setdefault(record["video"], record)
    return records


def _open_shard(workdir, process):
    """This process's shard, opened for appending after cutting any half-written last line."""
    path = Path(workdir) / f"predictions-{process:05d}.jsonl"
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
    return open(path, "a")


def load_for_eval(config):
    """(model, variables, labels) named by the config."""
    from stres_jax.predict import load_runner
    runner = load_runner(config.checkpoint or None, config.arch, conv_impl=config.conv_impl,
                         fold_batchnorm=config.fold_batchnorm, cpu_library=config.cpu_library)
    return runner.model, runner.variables, runner.labels


def evaluate(config, workdir, items=None, embeddings=False):
    """Run the protocol over `items` (default: the config's source); on process 0 returns
    the results dict. With `embeddings`, each record also holds the video's pooled
    512-d features averaged over its clips.
    """
    initialize_distributed(config.distributed)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model, variables, labels = load_for_eval(config)
    items = make_source(config.data, labels) if items is None else items
    done = read_records(workdir)
    mine = [item for item in items if item.key not in done][jax.process_index()::jax.process_count()]

    def forward(v, clips):
        logits, features = model.apply(v, clips, return_features=True)
        return {"probabilities": jax.nn.softmax(logits), "features": features["pre_logits"]}
    parallel = DataParallel(forward, variables, config.batch_size, compiler_options(config.cpu_library))
    videos = decoded_videos(mine, lambda item, loaded: protocol_clips_of(item, config.protocol, loaded),
                            config.num_workers, config.prefetch)
    show = jax.process_index() == 0 and sys.stderr.isatty()
    with _open_shard(workdir, jax.process_index()) as shard, \
            tqdm(total=len(mine), unit="video", disable=not show, desc="eval") as bar:
        def on_video(item, outputs):
            record = video_record(item, outputs, labels)
            if embeddings and "error" not in record:
                record["embedding"] = np.asarray(outputs["features"], np.float32).mean(0).tolist()
            shard.write(json.dumps(record) + "\n")
            shard.flush()
            bar.update()
        clip_shape = (config.protocol.clip_len, 112, 112, 3)
        run_videos(videos, parallel, clip_shape, on_video)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("stres_jax.eval finished")
    if jax.process_index() != 0:
        return None
    return write_results(workdir, [read_records(workdir).get(item.key) for item in items])


def write_results(workdir, records):
    """predictions.jsonl (ordered as the source) and results.json, each written atomically."""
    records = [r for r in records if r is not None]
    with atomic_path(Path(workdir) / "predictions.jsonl") as staging:
        staging.write_text("".join(json.dumps(r) + "\n" for r in records))
    results = summarize(records)
    with atomic_path(Path(workdir) / "results.json") as staging:
        staging.write_text(json.dumps(results, indent=1))
    return results


def define_flags():
    """The command's flags; defined only when run as a program, so importing stays side-effect free."""
    config_flags.DEFINE_config_file("config", None, "a config file, e.g. configs/r2plus1d.py",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "where predictions and results go (resumes if present)")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax reports every read at INFO
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    if config is None or not workdir:
        raise app.UsageError("--config and --workdir are required")
    try:
        results = evaluate(config, workdir)
    except UserError as err:
        print(f"stres_jax.eval: error: {err}", file=sys.stderr)
        sys.exit(2)
    if results is not None:
        print(json.dumps({k: v for k, v in results.items() if k not in ("per_class", "skipped")}))
        print(f"skipped {len(results['skipped'])} videos; results in {workdir}/results.json")


if __name__ == "__main__":
    define_flags()
    app.run(main)
