"""The installed wheel is the product: built from this checkout, installed with `[onednn]` into a
fresh venv without torch (from pip's cache), and every command run from a folder outside the
clone on the demo clip and a random-weight checkpoint, with the frictions a new user met: the
configs by name, hints for an installed package, flat folders, flags that cannot take effect."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(run, folder): `run(*args)` runs a command of the wheel's venv in `folder` (outside the clone)."""
    root = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"),
             str(REPO)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    wheel = next((root / "dist").glob("stres_jax-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    pip = subprocess.run([str(root / "venv" / "bin" / "pip"), "install", "-q", f"{wheel}[onednn]"],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    folder = root / "work"
    folder.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{root / 'venv' / 'bin'}{os.pathsep}{env['PATH']}"

    def run(*args, timeout=300):
        return subprocess.run(list(args), cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    yield run, folder
    shutil.rmtree(root, ignore_errors=True)


def ok(result):
    assert result.returncode == 0 and "Traceback" not in result.stderr, (result.args, result.stderr[-3000:])
    return result


def refused(result, *words, status=2):
    """One line on stderr (besides the line naming a packaged config), no traceback, the exit
    status, and each of `words` in it."""
    lines = [line for line in result.stderr.strip().splitlines() if ": the packaged " not in line]
    assert result.returncode == status and len(lines) == 1 and "Traceback" not in result.stderr, (result.args, result.stderr)
    assert all(word in lines[0] for word in words), (words, lines[0])
    return lines[0]


def test_every_command_runs_from_the_installed_wheel(installed):
    run, folder = installed
    assert run("python", "-c", "import torch").returncode == 1  # the product needs no torch
    demo = ok(run("python", "-c", "import stres_jax.demo as d; print(d.DEMO_CLIP)")).stdout.strip()
    assert not Path(demo).is_relative_to(REPO)  # the package itself, not the clone
    ok(run("stres-jax", "convert", "--random-init", "--arch", "r2plus1d_18", "--out", "ck"))
    for name in ("flat", "classes/abseiling", "classes/zumba"):
        (folder / name).mkdir(parents=True)
        shutil.copy(demo, folder / name / "clip.mp4")
    shutil.copy(demo, folder / "flat" / "second.mp4")

    answer = ok(run("stres-jax", "predict", "--checkpoint", "ck", "--clips", "1")).stdout
    assert "random weights" in answer  # the folder says it holds random weights, as --random-init does
    features = ok(run("stres-jax", "features", "flat", "--out", "feats", "--checkpoint", "ck", "--clip-len", "4",
                      "--stride", "32"))
    assert '"videos": 2' in features.stdout and len(list((folder / "feats").glob("*.npy"))) == 2
    ok(run("stres-jax", "embed", "flat", "--checkpoint", "ck", "--clips", "1", "--out", "emb.npz"))
    ok(run("stres-jax", "explain", demo, "--checkpoint", "ck", "--out", "cam.png"))
    assert "parameters" in ok(run("stres-jax", "info", "ck")).stdout.lower()
    ok(run("stres-jax", "export-onnx", "--checkpoint", "ck", "--out", "net.onnx"))
    ok(run("stres-jax", "import-onnx", "net.onnx", "--out", "back"))
    ok(run("stres-jax", "export-jax", "--checkpoint", "ck", "--out", "net.jax"))  # needed flatbuffers
    ok(run("stres-jax", "prepare", "flat", "--out", "store", "--workers", "1"))
    evaluated = ok(run("stres-jax", "eval", "--config", "r2plus1d", "--workdir", "ev", "--config.checkpoint=ck",
                       "--config.data.root=classes", "--config.protocol.clips_per_video=1"))
    assert "the packaged" in evaluated.stderr and (folder / "ev" / "results.json").is_file()
    trained = ok(run("stres-jax", "train", "--config", "finetune", "--workdir", "tr", "--config.checkpoint=ck",
                     "--config.data.root=classes", "--config.batch_size=2", "--config.sampling.clip_len=4",
                     "--config.sampling.clips_per_video=1", "--config.num_workers=0", "--config.num_epochs=1"))
    assert (folder / "tr" / "final").is_dir() and "Waiting for previous save" not in trained.stderr
    live = ok(run("stres-jax", "live", demo, "--checkpoint", "ck", "--no-skip", "--clip-len", "4", "--stride", "40",
                  "--serve", "127.0.0.1:0", "--jsonl", "w.jsonl"))  # the page's asset comes from the wheel
    assert "the page is at http://127.0.0.1:" in live.stderr
    assert len((folder / "w.jsonl").read_text().splitlines()) >= 2

    # frictions, each one line: what an installed user has, and no flag silently dropped
    refused(run("stres-jax", "eval", "--config", "nope", "--workdir", "x"), "packaged:", "r2plus1d", "finetune")
    refused(run("stres-jax", "prepare", "--tfds", "ucf101", "--out", "s2"), 'pip install "stres-jax[tfds]"')
    refused(run("stres-jax", "predict", demo, "--checkpoint", "missing"), "stres-jax convert", "--random-init")
    refused(run("stres-jax", "predict", demo, "--random-init", "--checkpoint", "ck"), "--random-init", "--checkpoint")
    refused(run("stres-jax", "predict", demo, "--checkpoint", "ck", "--stride", "8"), "--window")
    refused(run("stres-jax", "fetch", "r2plus1d_18", "--from", "."), "r2plus1d_18-91a641e6.pth")
    refused(run("stres-jax", "eval", "--config", "r3d", "--workdir", "never", "--random-init",
                "--config.data.root=nothing-here"), "nothing-here")
    assert not (folder / "never").exists()  # a refused run leaves no workdir behind
    refused(run("stres-jax", "eval", "--config", "r2plus1d", "--workdir", "ev", "--config.checkpoint=ck",
                "--config.data.root=classes", "--config.protocol.clips_per_video=2"), "--fresh")
    ok(run("stres-jax", "eval", "--config", "r2plus1d", "--workdir", "ev", "--config.checkpoint=ck", "--fresh",
           "--config.data.root=classes", "--config.protocol.clips_per_video=2"))
    (folder / "r2plus1d.py").write_text("from stres_jax.config.base import get_base_config\n\n\n"
                                        "def get_config():\n    return get_base_config('mc3_18')\n")
    local = run("stres-jax", "eval", "--config", "r2plus1d", "--workdir", "ev2", "--random-init",
                "--config.data.root=classes", "--config.protocol.clips_per_video=1")
    assert ok(local).stderr.count("from the working folder") == 1 and '"mc3_18"' in (folder / "ev2" / "run.json").read_text()

    # without the oneDNN wheels (their extension may be built already): the tap convolutions, said why
    ok(run("pip", "uninstall", "-q", "-y", "onednn-cpu-gomp", "onednn-devel-cpu-gomp"))
    assert "random weights" in ok(run("stres-jax", "predict", demo, "--checkpoint", "ck", "--clips", "1")).stdout
    assert "oneDNN" in ok(run("stres-jax", "info", "--speed")).stdout
