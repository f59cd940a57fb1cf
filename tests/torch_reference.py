"""The independent side of every parity test: torchvision's own models, preset and files.

PyAV is imported only by the file readers, so benchmarks/device_check.py runs where it is missing."""
import numpy as np
import torch
import torchvision
from torchvision.datasets.samplers import UniformClipSampler
from torchvision.datasets.video_utils import VideoClips
from torchvision.models.video import R2Plus1D_18_Weights


ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18")


def random_torchvision_model(arch, seed=0):
    """torchvision's net with random weights and randomised BN statistics (so BN is not the identity)."""
    torch.manual_seed(seed)
    model = randomise_batchnorm(getattr(torchvision.models.video, arch)(weights=None))
    with torch.no_grad():
        model.fc.weight.normal_(0, 0.05)
        model.fc.bias.uniform_(-0.5, 0.5)
    return model.eval()


def reference_net(arch, seed=0):
    """The independent net of any of our arch names: torchvision's own (18 layers), its classes at
    [3, 4, 6, 3] (r3d_34, mc3_34, r2plus1d_34), or the IG-65M publisher's definition."""
    if arch in ARCHS:
        return random_torchvision_model(arch, seed)
    if "csn" in arch:  # mmaction2's own ResNet3dCSN and head
        from tests.mmaction_reference import csn_recognizer
        return csn_recognizer(arch, seed=seed)
    if "ig65m" in arch or "kinetics" in arch:
        return ig65m_r2plus1d_34(400 if "kinetics" in arch else 487, seed)
    from torchvision.models.video import resnet as tv
    torch.manual_seed(seed)
    stem, builders = {"r3d_34": (tv.BasicStem, [tv.Conv3DSimple] * 4),
                      "mc3_34": (tv.BasicStem, [tv.Conv3DSimple] + [tv.Conv3DNoTemporal] * 3),
                      "r2plus1d_34": (tv.R2Plus1dStem, [tv.Conv2Plus1D] * 4)}[arch]
    return randomise_batchnorm(tv.VideoResNet(tv.BasicBlock, builders, [3, 4, 6, 3], stem)).eval()


def ig65m_r2plus1d_34(num_classes, seed=0):
    """The publisher's R(2+1)D-34, assembled from torchvision's classes exactly as
    moabitcoin/ig65m-pytorch's `ig65m/models.py` does (Caffe2's conv2 widths in the first block of
    layers 2-4, every BatchNorm eps 1e-3 and momentum 0.9), with random weights and BN statistics."""
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet
    torch.manual_seed(seed)
    model = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem)
    model.fc = torch.nn.Linear(model.fc.in_features, out_features=num_classes)
    model.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)
    model.layer3[0].conv2[0] = Conv2Plus1D(256, 256, 576)
    model.layer4[0].conv2[0] = Conv2Plus1D(512, 512, 1152)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.eps = 1e-3
            module.momentum = 0.9
    randomise_batchnorm(model)
    with torch.no_grad():
        model.fc.weight.normal_(0, 0.05)
        model.fc.bias.uniform_(-0.5, 0.5)
    return model.eval()


def randomise_batchnorm(model):
    """Random BatchNorm weights and running statistics (in place), so that BN is not the identity."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(1000)
    return model


def save_state_dict(model, path, legacy):
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    return path


def torch_forward(model, clips_nthwc):
    """Logits and (stem, layer1..4, pre_logits) of torchvision's model, as NTHWC numpy arrays."""
    captured = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name in ("stem", "layer1", "layer2", "layer3", "layer4", "avgpool")]
    with torch.no_grad():
        logits = model(torch.from_numpy(np.asarray(clips_nthwc)).permute(0, 4, 1, 2, 3))
    for hook in hooks:
        hook.remove()
    features = {name: out.permute(0, 2, 3, 4, 1).numpy() for name, out in captured.items()
                if name != "avgpool"}
    features["pre_logits"] = captured["avgpool"].flatten(1).numpy()
    return logits.numpy(), features


def relative_error(ours, reference):
    """max |ours - reference| over the largest |reference|."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def decode_all(path):
    """Every frame of a video with a plain PyAV loop, its packet timestamps and frame rate."""
    import av

    from tests.video_files import pyav_frames
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0)
        fps = float(stream.average_rate)
    return pyav_frames(path), pts, fps


def torchvision_protocol_clip_probs(torch_model, path, clips_per_video=5):
    """Per-clip softmax of torchvision's model over the protocol's clips."""
    return torch.softmax(torch.from_numpy(torchvision_protocol_outputs(torch_model, path, clips_per_video)), 1).numpy()


def torchvision_protocol_outputs(torch_model, path, clips_per_video=5):
    """Per-clip outputs of torchvision's model on the clips its VideoClips + UniformClipSampler
    choose (15 fps, 16 frames, step 1), through its preset. torchvision 0.29 decodes with
    TorchCodec, which is not installed; timestamps and frames come from PyAV instead."""
    preset = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    frames, chosen = torchvision_protocol_frames(path, clips_per_video)
    probs = []
    for indices in chosen:
        batch = preset(torch.from_numpy(frames[indices]).permute(0, 3, 1, 2))[None]
        with torch.no_grad():
            probs.append(torch_model(batch)[0].numpy())
    return np.stack(probs)


def torchvision_protocol_frames(path, clips_per_video=5):
    """(every frame, [frame indices of each clip]) as torchvision's VideoClips (15 fps, 16 frames,
    step 1) and UniformClipSampler choose them."""
    frames, pts, fps = decode_all(path)
    clips = VideoClips([str(path)], clip_length_in_frames=16, frames_between_clips=1, frame_rate=15,
                       _precomputed_metadata={"video_paths": [str(path)],
                                              "video_pts": [torch.tensor(pts)], "video_fps": [fps]})
    chosen = []
    for clip_id in UniformClipSampler(clips, clips_per_video):
        video, clip = clips.get_clip_location(clip_id)
        chosen.append([pts.index(int(p)) for p in clips.clips[video][clip]])
    return frames, chosen
