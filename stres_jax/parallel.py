"""Data parallelism over every device of every host: one jitted step over a Mesh.

`jax.pmap` is in maintenance mode; this is its replacement: NamedSharding over a 1-D
"data" mesh, with each process feeding its own rows through
`jax.make_array_from_process_local_data`.
"""
import collections
import concurrent.futures
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from stres_jax.data.transforms import normalize
from stres_jax.errors import UserError


def _cluster_processes():
    """Process count of a SLURM, Open MPI or Cloud TPU job JAX can join by itself (else 1)."""
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) or 1


def initialize_distributed(distributed):
    """`jax.distributed.initialize` for explicit multi-process configs or clusters JAX detects."""
    if distributed.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", distributed.cpu_collectives)
        jax.distributed.initialize(distributed.coordinator_address, distributed.num_processes,
                                   distributed.process_id)
    elif _cluster_processes() > 1:
        jax.distributed.initialize()


class DataParallel:
    """`step(variables, clips)` jitted over a data-parallel mesh of all devices."""

    def __init__(self, forward, variables, global_batch, compiler_options=None):
        devices = jax.device_count()
        if global_batch % devices:
            raise UserError(f"config.batch_size={global_batch} must be a multiple of the "
                            f"{devices} devices")
        self.local_batch = global_batch // jax.process_count()
        mesh = jax.make_mesh((devices,), ("data",))
        self.rows = NamedSharding(mesh, PartitionSpec("data"))
        replicated = NamedSharding(mesh, PartitionSpec())
        self.variables = jax.device_put(variables, replicated)
        self.step = jax.jit(forward, in_shardings=(replicated, self.rows), out_shardings=self.rows,
                            compiler_options=compiler_options)

    def __call__(self, local_rows):
        batch = jax.make_array_from_process_local_data(self.rows, local_rows)
        return jax.tree.map(_local_rows, self.step(self.variables, batch))


def _local_rows(array):
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


def any_process(flag):
    """Whether `flag` holds on any process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.process_allgather(np.array([flag])).any())


def decoded_videos(items, load_clips, workers, prefetch):
    """Yield `(item, clips or UserError)` in order, decoding up to `prefetch` videos ahead.

    `load_clips(item, loaded)` makes the clips. In-memory items are loaded here, in order
    (sequential readers need that), and passed as `loaded`; files are decoded by the worker
    threads. A video that fails yields its error, never raises.
    """
    items, pending = iter(items), collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool:
        def submit():
            item = next(items, None)
            if item is not None:
                loaded = _guarded(lambda it: it.load(), item) if item.load else None
                pending.append((item, pool.submit(_guarded, lambda it: load_clips(it, loaded), item)))
        for _ in range(max(prefetch, 1)):
            submit()
        while pending:
            item, future = pending.popleft()
            submit()
            yield item, future.result()


def _guarded(fn, item):
    try:
        return fn(item)
    except UserError as err:
        return err
    except Exception as err:  # an unexpected decoder failure must not cost the other videos
        return UserError(f"{item.key}: {type(err).__name__}: {err}")


def run_videos(videos, parallel, clip_shape, on_video):
    """Push every clip of `videos` through `parallel` in fixed-size, padded local batches.

    `on_video(item, outputs or UserError)` gets, per video, the stacked per-clip outputs;
    padding rows are dropped, so each clip counts exactly once. All processes loop together.
    """
    videos, buffer, partial = iter(videos), [], {}
    while True:
        while len(buffer) < parallel.local_batch:
            item, clips = next(videos, (None, None))
            if item is None:
                break
            if isinstance(clips, UserError):
                on_video(item, clips)
                continue
            partial[item.key] = (item, len(clips), [])
            buffer += [(item.key, clip) for clip in clips]
        rows, buffer = buffer[: parallel.local_batch], buffer[parallel.local_batch:]
        if not any_process(len(rows) > 0):
            return
        batch = np.zeros((parallel.local_batch,) + tuple(clip_shape), np.uint8)
        for i, (_, clip) in enumerate(rows):
            batch[i] = clip
        outputs = parallel(normalize(batch))
        for i, (key, _) in enumerate(rows):
            item, count, done = partial[key]
            done.append(jax.tree.map(lambda a: a[i], outputs))
            if len(done) == count:
                del partial[key]
                on_video(item, jax.tree.map(lambda *a: np.stack(a), *done))
