"""The torch-free reader, the key table's checks both ways, downloads and loading errors."""
import collections
import functools
import hashlib
import http.server
import json
import os
import pickle
import shutil
import threading

import numpy as np
import pytest
import torch

import stres_jax
from stres_jax.checkpoints import fetch
from stres_jax.checkpoints.store import CheckpointError
from stres_jax.checkpoints.key_table import KeyMismatchError
from stres_jax.checkpoints.torch_file import CheckpointFormatError, read_state_dict
from stres_jax.convert import convert_file
from stres_jax.cli.convert import main as convert_main


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["zip", "legacy", "bare-pickle"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    payload = collections.OrderedDict(weight=torch.zeros(2), evil=RunsACommand(marker))
    path = tmp_path / "evil.pth"
    if fmt == "bare-pickle":
        path.write_bytes(pickle.dumps(collections.OrderedDict(evil=RunsACommand(marker)), protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(CheckpointFormatError, match=r"names (posix|os)\.system.*nothing in the file was run"):
        read_state_dict(path)
    assert not marker.exists()


def test_reader_matches_torch_load_on_both_formats_and_safetensors(tmp_path, torch_models):
    from safetensors.torch import save_file
    state = torch_models("r2plus1d_18").state_dict()
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(state, tmp_path / "w.safetensors")
    for name in ("zip.pth", "legacy.pth", "w.safetensors"):
        ours = read_state_dict(tmp_path / name)
        assert list(ours) == list(state) or sorted(ours) == sorted(state)
        for key, tensor in state.items():
            np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=f"{name}: {key}")


def test_non_checkpoints_get_one_line_errors(tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"a": torch.ones(1000)}, tmp_path / "full.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) - 100])
    for name in ("text.pth", "empty.pth", "truncated.pth", "missing.pth"):
        with pytest.raises(CheckpointFormatError, match=name):
            read_state_dict(tmp_path / name)


@pytest.mark.parametrize("source,target", [("r2plus1d_18", "r3d_18"), ("r3d_18", "mc3_18"),
                                           ("mc3_18", "r2plus1d_18")])
def test_wrong_arch_checkpoint_is_refused_with_a_hint(tmp_path, torch_models, source, target):
    path = tmp_path / "w.pth"
    torch.save(torch_models(source).state_dict(), path)
    with pytest.raises(KeyMismatchError, match=f"looks like {source}"):
        convert_file(path, target, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unused_and_missing_keys_and_shapes_are_named(tmp_path, torch_models):
    state = dict(torch_models("mc3_18").state_dict())
    cases = {
        "extra.weight": dict(state, **{"extra.weight": torch.zeros(1)}),
        "layer3.1.conv2.1.running_var": {k: v for k, v in state.items()
                                         if k != "layer3.1.conv2.1.running_var"},
        r"layer1.0.conv1.0.weight.*\(64, 64, 3, 3\)": dict(state, **{"layer1.0.conv1.0.weight": torch.zeros(64, 64, 3, 3)}),
    }
    for pattern, bad in cases.items():
        torch.save(bad, tmp_path / "bad.pth")
        with pytest.raises(KeyMismatchError, match=pattern):
            convert_file(tmp_path / "bad.pth", "mc3_18", tmp_path / "out")


def test_convert_cli_reports_errors_in_one_line(tmp_path, capsys, torch_models):
    torch.save(torch_models("r3d_18").state_dict(), tmp_path / "w.pth")
    status = convert_main(["--arch", "r2plus1d_18", "--checkpoint", str(tmp_path / "w.pth"),
                           "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "looks like r3d_18" in err


def test_load_checkpoint_errors(tmp_path, converted):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        stres_jax.load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no meta.json"):
        stres_jax.load_checkpoint(tmp_path / "empty")
    partial = shutil.copytree(converted("mc3_18"), tmp_path / "partial")
    shutil.rmtree(partial / "variables" / "d")
    with pytest.raises(CheckpointError, match="incomplete"):
        stres_jax.load_checkpoint(partial)
    future = shutil.copytree(converted("mc3_18"), tmp_path / "future")
    meta = json.loads((future / "meta.json").read_text())
    (future / "meta.json").write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(CheckpointError, match="format 99"):
        stres_jax.load_checkpoint(future)
    wrong_arch = shutil.copytree(converted("mc3_18"), tmp_path / "wrong")
    (wrong_arch / "meta.json").write_text(json.dumps(dict(meta, arch="r3d_18")))
    with pytest.raises(CheckpointError, match="do not fit r3d_18"):
        stres_jax.load_checkpoint(wrong_arch)


def test_checkpoint_metadata(converted):
    meta = json.loads((converted("r3d_18") / "meta.json").read_text())
    assert meta["preprocessing"]["resize"] == [128, 171] and meta["preprocessing"]["crop"] == 112
    assert len(meta["source"]["sha256"]) == 64 and meta["labels"][0] == "abseiling"


@pytest.fixture
def weights_server(tmp_path, torch_models):
    """A local HTTP server publishing a checkpoint under its sha256-prefixed name."""
    served = tmp_path / "served"
    served.mkdir()
    torch.save(torch_models("mc3_18").state_dict(), served / "model.pth",
               _use_new_zipfile_serialization=False)
    data = (served / "model.pth").read_bytes()
    name = f"mc3_18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (served / name).write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", name, served
    server.shutdown()


def test_fetch_downloads_verifies_caches_and_converts(tmp_path, monkeypatch, weights_server, empty_cache):
    url, name, served = weights_server
    monkeypatch.setenv(fetch.BASE_URL_ENV, url)
    monkeypatch.setitem(fetch.PUBLISHED_FILES, "mc3_18", name)
    from stres_jax.cli import main
    assert main(["fetch", "mc3"]) == 0
    cached = empty_cache / "torchvision" / name
    assert cached.read_bytes() == (served / name).read_bytes()
    model, variables, meta = stres_jax.load_checkpoint(fetch.default_checkpoint_dir("mc3_18"))
    assert meta["arch"] == "mc3_18" and meta["source"]["file"] == name
    (served / name).unlink()  # a second fetch is served from the cache
    assert main(["fetch", "mc3_18"]) == 0


def test_fetch_rejects_a_corrupted_body_and_keeps_nothing(tmp_path, monkeypatch, weights_server, empty_cache):
    url, name, served = weights_server
    data = bytearray((served / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (served / name).write_bytes(bytes(data))
    monkeypatch.setitem(fetch.PUBLISHED_FILES, "mc3_18", name)
    with pytest.raises(fetch.FetchError, match="corrupt"):
        fetch.download_published("mc3_18", base_url=url)
    assert list((empty_cache / "torchvision").iterdir()) == []


def test_fetch_offline_says_so_in_one_line(tmp_path, monkeypatch, capsys, empty_cache):
    monkeypatch.setenv(fetch.BASE_URL_ENV, "http://127.0.0.1:9")  # the discard port: refused
    from stres_jax.cli import main
    assert main(["fetch", "r2plus1d_18"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fetch r2plus1d_18 --from FILE" in err and "r2plus1d_18-91a641e6.pth" in err


def test_fetch_from_a_local_copy_fills_the_cache_offline(tmp_path, monkeypatch, weights_server, capsys, empty_cache):
    _, name, served = weights_server
    monkeypatch.setenv(fetch.BASE_URL_ENV, "http://127.0.0.1:9")  # offline: nothing may be downloaded
    monkeypatch.setitem(fetch.PUBLISHED_FILES, "mc3_18", name)
    from stres_jax.cli import main
    assert main(["fetch", "mc3_18", "--from", str(served / name)]) == 0
    _, _, meta = stres_jax.load_checkpoint(fetch.default_checkpoint_dir("mc3_18"))
    assert meta["arch"] == "mc3_18" and meta["source"]["file"] == name
    assert main(["fetch", "mc3_18", "--from", str(served / "model.pth")]) == 0  # same bytes, other name
    (served / "other.pth").write_bytes(b"not the published file")
    capsys.readouterr()
    assert main(["fetch", "mc3_18", "--from", str(served / "other.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not that of torchvision's" in err


def test_weights_download_on_first_use(tmp_path, monkeypatch, weights_server, capsys, empty_cache):
    """As torchvision's: a command that needs the published weights and finds none cached
    downloads, checks and converts them once (here from a local server)."""
    url, name, _ = weights_server
    monkeypatch.setenv(fetch.BASE_URL_ENV, url)
    monkeypatch.setitem(fetch.PUBLISHED_FILES, "mc3_18", name)
    from stres_jax.cli import main
    from stres_jax.demo import DEMO_CLIP
    assert main(["predict", str(DEMO_CLIP), "--arch", "mc3", "--clips", "1", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "downloaded torchvision's mc3_18 weights" in captured.err
    assert fetch.default_checkpoint_dir("mc3_18").is_dir() and "top" in json.loads(captured.out)[0]
    monkeypatch.setenv(fetch.BASE_URL_ENV, "http://127.0.0.1:9")  # offline now: the cache serves
    assert main(["predict", str(DEMO_CLIP), "--arch", "mc3", "--clips", "1"]) == 0
    assert "downloaded" not in capsys.readouterr().err
