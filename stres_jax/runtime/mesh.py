"""Data parallelism over every device of every host: one jitted step over a Mesh.

`jax.pmap` is in maintenance mode; this is its replacement: NamedSharding over a 1-D
"data" mesh, with each process feeding its own rows through
`jax.make_array_from_process_local_data`.
"""
import contextlib

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from stres_jax.errors import UserError


def data_shardings(global_batch):
    """(rows, replicated) NamedShardings over a 1-D "data" mesh of every device; the global
    batch must divide among the devices."""
    devices = jax.device_count()
    if global_batch % devices:
        raise UserError(f"the batch size {global_batch} must be a multiple of the {devices} devices")
    # Auto axes (jit's sharding propagation), not JAX 0.10's default Explicit ones: those put the
    # sharding into every value's type, which FFI calls (models.onednn) do not carry.
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())


def global_rows(rows, local):
    """One global array from every process's local rows (a pytree)."""
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(rows, a), local)


def local_rows(array):
    """This process's rows of a row-sharded global array, in order, as numpy."""
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


def traced_on(fn, sharding):
    """`fn`, traced with its mesh named for the convolutions that need it (`models.onednn`)."""
    from stres_jax.models.onednn import conv_mesh

    def traced(*args):
        with conv_mesh(sharding.mesh):
            return fn(*args)
    return traced


class DataParallel:
    """`step(variables, clips)` jitted over a data-parallel mesh of all devices."""

    def __init__(self, forward, variables, global_batch, compiler_options=None):
        self.rows, replicated = data_shardings(global_batch)
        self.local_batch = global_batch // jax.process_count()
        self.variables = jax.device_put(variables, replicated)
        self.step = jax.jit(traced_on(forward, self.rows), in_shardings=(replicated, self.rows), out_shardings=self.rows,
                            compiler_options=compiler_options)

    def __call__(self, local):
        return self.fetch(self.submit(local))

    def submit(self, local):
        """Start the step on this process's `local` rows and return at once (JAX dispatches
        asynchronously): the caller prepares the next batch while the devices compute."""
        self._shape = local.shape
        with self._memory_errors():
            return self.step(self.variables, global_rows(self.rows, local))

    def fetch(self, submitted):
        """This process's rows of a submitted step's outputs, as numpy (waits for them)."""
        with self._memory_errors():
            return jax.tree.map(local_rows, submitted)

    @contextlib.contextmanager
    def _memory_errors(self):
        try:
            yield
        except jax.errors.JaxRuntimeError as err:
            if "RESOURCE_EXHAUSTED" not in str(err) and "out of memory" not in str(err).lower():
                raise
            shape = "x".join(map(str, self._shape[1:]))
            raise UserError(f"the net ran out of device memory on a batch of {self.local_batch * jax.process_count()} "
                            f"clips of {shape} (32-frame clips take twice 16's); lower the batch size "
                            "(--batch-size, --config.batch_size)") from None
