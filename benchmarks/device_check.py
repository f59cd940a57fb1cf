"""The accelerator check: parity with torchvision on the device, bf16 inference and bf16 training
clips/s against torchvision under AMP, as one table. `benchmarks/device_check.sh` runs it on a
lent GPU machine (its own jax, flax, optax and torch; nothing to install):

    python benchmarks/device_check.py                # on the accelerator
    python benchmarks/device_check.py --smoke        # here, on the CPU: tiny sizes, checks the script

Parity runs in float32 with TF32 off on both sides (highest matmul precision), on random weights
with randomised BN statistics. Speed: median of timed repeats after warm-up, inputs already on
the device, both frameworks interleaved in one process. Not a test.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.torch_reference import ARCHS, random_torchvision_model, relative_error  # noqa: E402

from stres_jax.checkpoints.key_table import torch_to_flax  # noqa: E402
from stres_jax.models.init import abstract_variables  # noqa: E402
from stres_jax.models import create_model  # noqa: E402
from stres_jax.models.fold import fold_batchnorm  # noqa: E402
from stres_jax.train.step import init_state, make_train_step, sgd  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def timed(fn, repeats):
    fn()
    fn()  # warm-up: compile, autotune
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parity(arch, theirs, size, frames):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    clips = np.random.default_rng(0).standard_normal((2, frames, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        reference = theirs.to(DEVICE)(torch.from_numpy(clips).permute(0, 4, 1, 2, 3).to(DEVICE)).cpu().numpy()
    model = create_model(arch, conv_impl="auto")
    variables = torch_to_flax({k: v.cpu().numpy() for k, v in theirs.state_dict().items()}, arch,
                              abstract_variables(model))
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(model.apply)(variables, clips)
    return relative_error(ours, reference)


def inference_rates(arch, theirs, batch, size, frames, repeats):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    clips = np.random.default_rng(1).standard_normal((batch, frames, size, size, 3)).astype(np.float32)
    model = create_model(arch, fold_batchnorm=True, dtype=jnp.bfloat16)
    variables = torch_to_flax({k: v.cpu().numpy() for k, v in theirs.state_dict().items()}, arch,
                              abstract_variables(create_model(arch)))
    folded = jax.device_put(fold_batchnorm(variables, model.spec))
    forward = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x).astype(jnp.float32)))
    x_jax = jax.device_put(clips)
    jax_time = timed(lambda: forward(folded, x_jax).block_until_ready(), repeats)
    net = theirs.to(DEVICE).eval().to(memory_format=torch.channels_last_3d)
    x_torch = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).to(DEVICE).contiguous(memory_format=torch.channels_last_3d)

    def torch_forward():
        with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16):
            torch.softmax(net(x_torch).float(), 1)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
    torch_time = timed(torch_forward, repeats)
    return batch / jax_time, batch / torch_time


def training_rates(arch, theirs, batch, size, frames, repeats):
    rng = np.random.default_rng(2)
    clips = rng.standard_normal((batch, frames, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 400, batch).astype(np.int32)
    model = create_model(arch, dtype=jnp.bfloat16)
    variables = torch_to_flax({k: v.cpu().numpy() for k, v in theirs.state_dict().items()}, arch,
                              abstract_variables(create_model(arch)))
    optimizer = sgd(0.01, 0.9, 1e-4)
    state = [jax.device_put(init_state(model, variables, optimizer))]
    step = jax.jit(make_train_step(model, optimizer), donate_argnums=0)
    x_jax, y_jax = jax.device_put(clips), jax.device_put(labels)

    def jax_step():
        state[0], metrics = step(state[0], x_jax, y_jax)
        metrics["loss"].block_until_ready()
    jax_time = timed(jax_step, repeats)
    net = theirs.to(DEVICE).train().to(memory_format=torch.channels_last_3d)
    torch_optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x_torch = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).to(DEVICE).contiguous(memory_format=torch.channels_last_3d)
    y_torch = torch.from_numpy(labels).long().to(DEVICE)

    def torch_step():
        torch_optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x_torch).float(), y_torch)
        loss.backward()
        torch_optimizer.step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
    torch_time = timed(torch_step, repeats)
    return batch / jax_time, batch / torch_time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--batch", type=int, default=32, help="inference and training batch (default 32)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = parser.parse_args(argv)
    size, frames, batch, repeats = (32, 4, 2, 1) if args.smoke else (112, 16, args.batch, args.repeats)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on "
          f"{torch.cuda.get_device_name() if DEVICE == 'cuda' else 'cpu'}; batch {batch} of {frames}x{size}x{size}",
          flush=True)
    rows = []
    for arch in args.archs:
        theirs = random_torchvision_model(arch)
        error = parity(arch, theirs, size, frames)
        infer = inference_rates(arch, theirs, batch, size, frames, repeats)
        train = training_rates(arch, random_torchvision_model(arch), batch, size, frames, repeats)
        rows.append((arch, error, *infer, *train))
        print(f"  {arch} done", flush=True)
    print("\n| arch | float32 logits vs torchvision (rel.) | bf16 inference clips/s: JAX / torch AMP (ratio) "
          "| bf16 training clips/s: JAX / torch AMP+SGD (ratio) |\n|---|---|---|---|")
    for arch, error, ji, ti, jt, tt in rows:
        print(f"| {arch} | {error:.1e} | {ji:.1f} / {ti:.1f} ({ji / ti:.2f}x) | {jt:.1f} / {tt:.1f} ({jt / tt:.2f}x) |")


if __name__ == "__main__":
    main()
