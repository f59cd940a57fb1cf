"""What a training run shows and records: a progress bar, `metrics.jsonl` and TensorBoard events."""
import json
import sys
from pathlib import Path

from stres_jax.runtime.progress import LogLines, progress


class RunLog:
    """Training and validation lines to `W/metrics.jsonl` and `W/tensorboard/` (process 0 only).

    Resuming from step `start` drops the lines logged after it, so the file never holds a step
    twice."""

    def __init__(self, workdir, start, total_steps, lead=True):
        self.lead = lead
        self.bar = progress(total_steps, "train", "step", show=lead, initial=start, timed=False)
        self.file = self.writer = None
        if not lead:
            return
        from tensorboardX import SummaryWriter  # slow to import; only the lead process writes
        path = Path(workdir) / "metrics.jsonl"
        kept = [line for line in (path.read_text().splitlines() if path.exists() else [])
                if line.strip() and json.loads(line)["step"] <= start]
        path.write_text("".join(line + "\n" for line in kept))
        self.file = open(path, "a")
        self.writer = SummaryWriter(str(Path(workdir) / "tensorboard"), purge_step=start + 1 if start else None)

    def step(self):
        self.bar.update()

    def train(self, step, epoch, values):
        self.bar.set_postfix(loss=f"{values['loss']:.3f}", acc=f"{values['accuracy']:.2f}",
                             lr=f"{values['learning_rate']:.2g}", clips_s=f"{values['clips_per_second']:.1f}")
        if isinstance(self.bar, LogLines):  # not a terminal (a cluster log): one line per log_every_steps
            self.bar.line()
        self._write("train", {"step": step, "epoch": epoch, **values})

    def validation(self, step, epoch, values):
        if self.lead:
            self.bar.write(f"epoch {epoch}: validation video acc@1 {values['video_acc1']:.4f}, "
                           f"acc@5 {values['video_acc5']:.4f} ({values['num_videos']} videos)", file=sys.stderr)
        self._write("validation", {"step": step, "epoch": epoch, "split": "validation", **values})

    def _write(self, split, line):
        if not self.lead:
            return
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        for key, value in line.items():
            if key not in ("step", "epoch", "split"):
                self.writer.add_scalar(f"{split}/{key}", value, line["step"])

    def close(self):
        self.bar.close()
        if self.lead:
            self.writer.close()
            self.file.close()
