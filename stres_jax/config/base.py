"""The base config of evaluation and embedding runs; configs/r2plus1d.py shows the command.

It lives in the package (not in configs/), so a config file works from any directory and
`stres-jax embed` can use it too."""
import ml_collections

from stres_jax.models import ARCH_SPECS, DEFAULT_ARCH, canonical_arch
from stres_jax.runtime.xla_options import DEFAULT_CPU_LIBRARY


def get_base_config(arch=DEFAULT_ARCH):
    """Every field of an eval or embedding run of `arch` (a name or alias), with its default."""
    config = ml_collections.ConfigDict()
    config.arch = canonical_arch(arch)
    config.checkpoint = ""          # checkpoint directory; "" = the one `stres-jax fetch ARCH` cached
    config.random_init = False      # True (or --random-init): torchvision's random weights, no checkpoint
    config.batch_size = 8           # clips per step over all devices and hosts
    config.num_workers = 2          # decoding threads per process
    config.prefetch = 8             # videos decoded ahead of the devices
    config.conv_impl = "auto"       # conv lowering: "auto" = "onednn" on CPU where it builds, else "taps";
    #                                 "xla" elsewhere; or name one: onednn, taps, taps3d, xla (BENCHMARKS.md)
    config.cpu_library = DEFAULT_CPU_LIBRARY  # CPU kernels: "xla", "xla-only", "ynnpack", "default"; xla_options.py
    config.fold_batchnorm = True    # fold BN into the convs for inference (logits within 1e-6)
    config.dtype = "float32"        # "bfloat16": the net computes in bf16, softmax in float32 (accelerators)
    config.fresh = False            # True: delete the workdir's earlier results instead of resuming

    config.data = ml_collections.ConfigDict()
    config.data.source = "folder"   # "folder" (root/<class>/<video>), "csv" (Kinetics annotations), "tfds",
    #                                 or "store" (a clip store made by `stres-jax prepare`)
    config.data.root = ""           # folder of videos (folder and csv sources)
    config.data.csv = ""            # Kinetics CSV: label,youtube_id,time_start,time_end,split
    config.data.split = ""          # keep only CSV rows / the TFDS split of this name ("" = all / "test";
    #                                 training: "train")
    config.data.tfds_name = ""      # e.g. "ucf101/ucf101_1" (native resolution) for source "tfds"
    config.data.tfds_data_dir = ""  # where TFDS keeps its datasets ("" = TFDS's default)
    config.data.tfds_fps = 25.0     # frame rate of the TFDS videos (UCF-101: 25)
    config.data.store = ""          # clip store directory for source "store" (`stres-jax prepare`)
    config.data.max_videos = 0      # use only the first N videos (0 = all)

    preset = ARCH_SPECS[config.arch].preset  # the arch's test protocol (the net's pixels come from its checkpoint)
    config.protocol = ml_collections.ConfigDict()
    config.protocol.frame_rate = float(preset.frame_rate or 0)  # resample to this rate (0 = native); 15
    config.protocol.clip_len = preset.clip_len  # 16; the IG-65M nets' 8 or 32, the CSN nets' 32
    config.protocol.clips_per_video = preset.clips  # 5; the CSN nets' 10
    config.protocol.crops = preset.crops  # spatial crops per clip: 1 (centre) or 3 (left, centre, right)

    config.distributed = ml_collections.ConfigDict()
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    config.distributed.coordinator_address = ""   # "host:port" of process 0
    config.distributed.cpu_collectives = "gloo"    # for CPU-only multi-process runs
    return config


def get_train_config(arch=DEFAULT_ARCH):
    """Every field of a training run (`python -m stres_jax.train`), with torchvision's defaults."""
    config = ml_collections.ConfigDict()
    config.arch = canonical_arch(arch)
    config.checkpoint = ""          # start from this converted checkpoint; "" = the cached `fetch` one
    config.from_scratch = False     # True: torchvision's initialisation instead of a checkpoint
    config.frozen_stages = 0        # freeze the stem and the first N stages (0 = train everything)
    config.frozen_bn = False        # BN on its running statistics, scale and bias frozen (mmaction2's CSN fine-tuning)
    config.bn_momentum = 0.1        # BatchNorm momentum in PyTorch's sense; ig65m-pytorch's code sets 0.9 for
    #                                 its nets (probably a slip: Caffe2's 0.9 is PyTorch's 0.1)
    config.seed = 0
    config.fresh = False            # True (or --fresh): delete the workdir's checkpoints and logs first
    config.num_epochs = 1
    config.batch_size = 24          # clips per step over all devices and hosts
    config.dtype = "float32"        # "bfloat16": bf16 compute, f32 parameters, optimizer and BN stats;
    #                                 "float64": everything in f64 (for exactness checks)
    config.num_workers = 2          # grain decoding processes per host (0 = in this process)
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 3
    config.log_every_steps = 10
    config.conv_impl = "auto"
    config.cpu_library = DEFAULT_CPU_LIBRARY

    base = get_base_config(arch)
    config.data = base.data         # training videos: "folder" (root/<class>/<video>), "csv" or "tfds"
    #                                 (TFDS prepared as array_record: training reads it in random order)
    config.data.max_replaced_fraction = 0.01  # stop when an epoch replaces more of its clips than this
    #                                 (clips that failed to load; each is named on stderr)
    preset = ARCH_SPECS[config.arch].preset  # the train pipeline follows the net's preset's reference
    mmaction = preset.sampling == "mmaction"
    config.sampling = ml_collections.ConfigDict()
    config.sampling.clips_per_video = 1 if mmaction else 5  # random clips per video and epoch (torchvision's
    #                                     reference: 5; mmaction2's CSN configs: SampleFrames(num_clips=1))
    config.sampling.clip_len = ARCH_SPECS[config.arch].clip_len  # 16; the IG-65M nets' 8 or 32, the CSN nets' 32
    config.sampling.frame_rate = float(preset.frame_rate or 0)  # 15; 0: the native frames (the CSN nets)
    config.sampling.frame_interval = preset.frame_interval  # mmaction2 sampling only: 1 frame in this many (CSN: 2)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 0.01  # for `reference_batch` clips (scaled linearly to batch_size)
    config.optimizer.reference_batch = 0   # 0: use learning_rate as it is
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_epochs = 0.0
    config.optimizer.warmup_factor = 0.001
    config.optimizer.milestones = ()       # epochs where the rate is multiplied by gamma
    config.optimizer.gamma = 0.1
    config.optimizer.clip_grad_norm = 0.0  # > 0: clip the gradients' norm first, as torch's clip_grad_norm_ (0 = no)
    config.validation = ml_collections.ConfigDict()
    config.validation.data = get_base_config(arch).data  # evaluated after each epoch; no root = none
    config.validation.protocol = get_base_config(arch).protocol  # the eval protocol (5 clips at 15 fps)
    config.validation.num_workers = 2  # decoding threads
    config.distributed = base.distributed
    return config
