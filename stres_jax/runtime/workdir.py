"""A workdir serves one run: `run.json` records what made its results (net, weights, protocol,
data), and a run of anything else is refused there, so a resumed run never hands back results
made by another checkpoint, arch or protocol."""
import hashlib
import json
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from stres_jax.runtime.atomic import atomic_path, check_folder
from stres_jax.runtime.distributed import sync_processes
from stres_jax.errors import UserError

RUN_FILE = "run.json"


def weights_fingerprint(variables):
    """sha256 of every array (path, dtype, shape and bytes): equal exactly when the weights are."""
    digest = hashlib.sha256()
    for path, value in sorted(traverse_util.flatten_dict(jax.device_get(variables)).items()):
        value = np.ascontiguousarray(value)
        digest.update(f"{'/'.join(path)}:{value.dtype}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def claim_workdir(workdir, identity, results_glob, fresh_hint="delete it first", write=True):
    """Record `identity` in `workdir/run.json`, or check it equals the one there.

    A workdir holding results (files matching `results_glob`, one pattern or several) but no
    run.json is refused too:
    nobody can tell what made them. `fresh_hint` says how to start afresh instead. With
    `write=False` it only checks (a run checks first and claims once all its checks passed)."""
    workdir = check_folder(workdir)
    identity = json.loads(json.dumps(identity))
    path = workdir / RUN_FILE
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
        if changed:
            raise UserError(f"{workdir}: holds the results of another run (it differs in {', '.join(changed)}); "
                            f"use a new workdir, or {fresh_hint}")
        return
    patterns = (results_glob,) if isinstance(results_glob, str) else results_glob
    if any(any(workdir.glob(pattern)) for pattern in patterns):
        raise UserError(f"{workdir}: holds results but no {RUN_FILE} saying what made them; "
                        f"use a new workdir, or {fresh_hint}")
    if not write:
        return
    sync_processes("stres_jax: workdir checked")  # every process read it before it is written
    workdir.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves no folder behind
    if jax.process_index() == 0:
        with atomic_path(path) as staging:
            staging.write_text(json.dumps(identity, indent=1))


def clear_workdir(workdir, patterns):
    """Delete run.json and the files (or a run's folders) matching `patterns` (a run that starts afresh)."""
    import shutil
    if jax.process_index() == 0 and (Path(workdir) / RUN_FILE).is_file():  # only a run's own workdir
        for pattern in (RUN_FILE, *patterns):
            for path in Path(workdir).glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    sync_processes("stres_jax: workdir cleared")
