"""UCF-101 split 1 end to end: embed the TFDS train and test splits, then probe them."""
from pathlib import Path

from linear_probe import probe
from stres_jax.data.sources import tfds_source
from stres_jax.embed import embed, save_npz


def embed_split(config, split):
    items = tfds_source(config.tfds_name, split, [], config.fps)
    if config.max_videos:
        items = items[: config.max_videos]
    workdir = Path(config.workdir) / split if config.workdir else None
    arrays, skipped = embed(items, config.embedding, workdir)
    if config.workdir:
        save_npz(arrays, Path(config.workdir) / f"{split}.npz")
    print(f"{split}: {len(arrays['paths'])} videos embedded, {len(skipped)} skipped")
    return arrays["embeddings"], arrays["labels"]


def run_pipeline(config):
    """{"probe": ..., "ridge": ...} for the config of experiments/ucf101_probe.py."""
    config.embedding.checkpoint = config.checkpoint
    train = embed_split(config, config.train_split)
    test = embed_split(config, config.test_split)
    return probe(train, test, config.steps, config.probe_batch_size)
