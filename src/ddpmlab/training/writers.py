"""Where training's numbers and pictures go: ``metrics.jsonl`` always, TensorBoard and W&B when enabled.
:class:`RunningMean` averages a logging window's values without reading them back from the device.

:class:`RunLogger` is what the Trainer writes through; it holds no training state. Only the process
that writes (rank 0, with a run directory) opens anything: elsewhere every call does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ddpmlab.config import TrainConfig

__all__ = ["RunLogger", "RunningMean", "progress_bar"]


class RunLogger:
    """Writes scalars (``metrics.jsonl`` + TensorBoard ``logs/`` + W&B) and images (TensorBoard, W&B).

    Args:
        run_dir: the run directory, or None to write nothing.
        config: the ``train`` section (``tensorboard``, ``wandb``, ``wandb_project``).
        run_config: the whole resolved config (W&B records it; its ``name`` names the W&B run).
        enabled: False on processes that must not write (ranks other than 0).
    """

    def __init__(
        self, run_dir: Path | None, config: TrainConfig, run_config: dict[str, Any], enabled: bool = True
    ) -> None:
        self.run_dir = run_dir if enabled else None
        self.config = config
        self.run_config = run_config
        self._writers: list[Any] = []

    def open(self, resumed_at: int = 0) -> None:
        """Create the run directory and open TensorBoard / W&B as configured. ``resumed_at``: the step of
        the checkpoint training continues from; TensorBoard drops the events a killed session logged
        after it (they are logged again).

        Raises:
            RuntimeError: ``train.wandb`` without the wandb package.
        """
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: metrics.jsonl still has everything
                pass
            else:
                purge = resumed_at + 1 if resumed_at else None
                self._writers.append(SummaryWriter(str(self.run_dir / "logs"), purge_step=purge))
        if self.config.wandb:
            try:
                import wandb
            except ImportError:
                raise RuntimeError("train.wandb=true needs the wandb package: pip install wandb") from None
            wandb.init(
                project=self.config.wandb_project,
                name=self.run_config.get("name"),
                config=self.run_config,
                dir=str(self.run_dir),
                resume="allow",
            )
            self._writers.append(wandb)

    def close(self) -> None:
        """Flush and close every writer."""
        for writer in self._writers:
            if hasattr(writer, "close"):
                writer.close()
            elif hasattr(writer, "finish"):
                writer.finish()
        self._writers = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One line ``{"step": step, **metrics}`` in ``metrics.jsonl``, and scalars: ``train/<key>``, or
        the key itself when it names its group (``eval/fd``)."""
        if self.run_dir is None:
            return
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with open(self.run_dir / "metrics.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        tagged = {(key if "/" in key else f"train/{key}"): value for key, value in metrics.items()}
        for writer in self._writers:
            if hasattr(writer, "add_scalar"):
                for tag, value in tagged.items():
                    writer.add_scalar(tag, value, step)
            else:
                writer.log(tagged, step=step)

    def log_image(self, step: int, tag: str, image: torch.Tensor) -> None:
        """Send an image [C, H, W] in [0, 1] to TensorBoard / W&B (if enabled)."""
        for writer in self._writers:
            if hasattr(writer, "add_image"):
                writer.add_image(tag, image, step)
            else:
                writer.log({tag: writer.Image(image.permute(1, 2, 0).numpy())}, step=step)


def progress_bar(config: TrainConfig, total: int | None, initial: int, enabled: bool = True) -> Any:
    """A tqdm bar of optimizer steps (``train.progress``; None where disabled or not rank 0)."""
    if not config.progress or not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


class RunningMean:
    """The mean of the values added since the last ``pop``.

    Tensors (a loss, a gradient norm) are summed where they live: adding a GPU scalar does not wait
    for the GPU, so a training step never stalls on its own metrics; the one read-back is in ``pop``,
    once per logging window. Sums are float64 except on MPS (which has none).
    """

    def __init__(self) -> None:
        self.total: float | torch.Tensor = 0.0
        self.count = 0

    def add(self, value: float | torch.Tensor, count: int = 1) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().to(torch.float32 if value.device.type == "mps" else torch.float64)
        self.total = self.total + value * count
        self.count += count

    def pop(self) -> float:
        mean = float(self.total) / max(1, self.count)
        self.total, self.count = 0.0, 0
        return mean
