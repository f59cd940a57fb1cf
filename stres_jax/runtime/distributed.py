"""Multi-process start-up: explicit (coordinator, count, id) or a cluster JAX detects itself."""
import os

import jax
import numpy as np
from jax.experimental import multihost_utils


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


def any_process(flag):
    """Whether `flag` holds on any process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.process_allgather(np.array([flag])).any())


def sync_processes(name):
    """A barrier over every process (nothing to do in a single-process run)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
