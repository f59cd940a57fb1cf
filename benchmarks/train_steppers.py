"""One training step (forward, backward, SGD with momentum and weight decay) as a callable:
torch's on its net, ours on the same weights. Each imports its own stack only when called, so
`peak_memory.py --train` measures a process holding one stack alone."""

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4


def torch_state(net):
    """A torch net's state_dict as numpy arrays (what `torch_to_flax` reads)."""
    return {k: v.numpy() for k, v in net.state_dict().items()}


def torch_stepper(net, clips, labels):
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous().to(device)
    y = torch.from_numpy(labels).to(device)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return step


def jax_stepper(arch, state, clips, labels, dtype, impl="auto"):
    """The train step of lowering `impl`; "onednn-allgrads" / "onednn-spacetime" are "onednn" with
    oneDNN's gradients for every kernel / only those spanning time and space (3x3x3, 3x7x7),
    whatever `onednn.gradient_rule()` picks on this CPU; "onednn-ndhwc-kgrad" never reorders
    the kernel gradient's activations to the blocked layout (`onednn.blocked_kernel_gradient`)."""
    import jax
    import jax.numpy as jnp
    from stres_jax.checkpoints.key_table import torch_to_flax
    from stres_jax.models import create_model
    from stres_jax.models.init import abstract_variables
    from stres_jax.runtime.xla_options import DEFAULT_CPU_LIBRARY, compiler_options
    from stres_jax.train import init_state, make_train_step, sgd
    impl, _, library = impl.partition("@")  # IMPL@CPU_LIBRARY: another `compiler_options` library
    switch = {"onednn-allgrads": {"gradient_kernels": "all"},
              "onednn-spacetime": {"gradient_kernels": "spacetime"},
              "onednn-ndhwc-kgrad": {"blocked_kernel_gradient": False}}.get(impl)
    model = create_model(arch, dtype=dtype, conv_impl="onednn" if switch else impl)
    variables = torch_to_flax(state, arch, abstract_variables(model))
    optimizer = sgd(LR, MOMENTUM, WEIGHT_DECAY)
    holder = {"state": init_state(model, variables, optimizer)}
    step_fn = jax.jit(make_train_step(model, optimizer), donate_argnums=0,
                      compiler_options=compiler_options(library or DEFAULT_CPU_LIBRARY))
    clips, labels = jnp.asarray(clips), jnp.asarray(labels)
    if switch:
        from stres_jax.models import onednn
        with onednn.choosing(**switch):
            step_fn = step_fn.lower(holder["state"], clips, labels).compile()  # traced now, with the switch set

    def step():
        holder["state"], metrics = step_fn(holder["state"], clips, labels)
        metrics["loss"].block_until_ready()
    return step
