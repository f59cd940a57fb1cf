"""The base config of evaluation and embedding runs; configs/r2plus1d.py shows the command.

It lives in the package (not in configs/), so a config file works from any directory and
`stres-jax embed` can use it too."""
import ml_collections

from stres_jax.data import sampling
from stres_jax.models import DEFAULT_ARCH, canonical_arch
from stres_jax.xla_options import DEFAULT_CPU_LIBRARY


def get_base_config(arch=DEFAULT_ARCH):
    """Every field of an eval or embedding run of `arch` (a name or alias), with its default."""
    config = ml_collections.ConfigDict()
    config.arch = canonical_arch(arch)
    config.checkpoint = ""          # checkpoint directory; "" = the one `stres-jax fetch ARCH` cached
    config.batch_size = 8           # clips per step over all devices and hosts
    config.num_workers = 2          # decoding threads per process
    config.prefetch = 8             # videos decoded ahead of the devices
    config.conv_impl = "auto"       # conv lowering: "taps" (CPU default), "xla" (elsewhere); BENCHMARKS.md
    config.cpu_library = DEFAULT_CPU_LIBRARY  # CPU kernels: XLA's own ("xla") or "ynnpack"; xla_options.py
    config.fold_batchnorm = True    # fold BN into the convs for inference (logits within 1e-6)

    config.data = ml_collections.ConfigDict()
    config.data.source = "folder"   # "folder" (root/<class>/<video>), "csv" (Kinetics annotations) or "tfds"
    config.data.root = ""           # folder of videos (folder and csv sources)
    config.data.csv = ""            # Kinetics CSV: label,youtube_id,time_start,time_end,split
    config.data.split = ""          # keep only CSV rows / the TFDS split of this name ("" = all / "test")
    config.data.tfds_name = ""      # e.g. "ucf101" for source "tfds"
    config.data.tfds_fps = 25.0     # frame rate of the TFDS videos (UCF-101: 25)
    config.data.max_videos = 0      # evaluate only the first N videos (0 = all)

    config.protocol = ml_collections.ConfigDict()
    config.protocol.frame_rate = float(sampling.FRAME_RATE)  # resample to this rate (0 = native)
    config.protocol.clip_len = sampling.CLIP_LEN
    config.protocol.clips_per_video = sampling.NUM_CLIPS

    config.distributed = ml_collections.ConfigDict()
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    config.distributed.coordinator_address = ""   # "host:port" of process 0
    config.distributed.cpu_collectives = "gloo"    # for CPU-only multi-process runs
    return config
