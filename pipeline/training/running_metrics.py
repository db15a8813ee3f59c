"""An epoch's running loss and accuracy, kept on the device and shown without waiting for it."""

from __future__ import annotations

import torch


class DivergedError(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, steps: int, loss: float):
        super().__init__(f"loss {loss} at epoch {epoch}, step {step}/{steps}")
        self.epoch, self.step, self.steps, self.loss = epoch, step, steps, loss


def sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class RunningMetrics:
    """An epoch's loss sum, correct count and first non-finite step, kept on the device.

    `add` queues tensor ops and never waits for the device; `read` copies all of it to the host
    at once. The loss is summed in float64 as loss x batch size, as the host summed
    `loss.item()` before, so the reported loss is the same to the last bit; in float32 on Apple
    MPS, which has no float64.
    """

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), dtype=sum_dtype(device), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad_step = torch.zeros((), dtype=torch.int64, device=device)  # 0: none yet
        self.bad_loss = torch.zeros((), dtype=torch.float32, device=device)
        self.seen = 0

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor):
        loss = loss.detach().float()
        self.loss_sum += loss.to(self.loss_sum.dtype) * len(targets)
        self.correct += (logits.argmax(1) == targets).sum()
        self.seen += len(targets)
        first = (self.first_bad_step == 0) & ~torch.isfinite(loss)
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        self.bad_loss = torch.where(first, loss, self.bad_loss)

    def values(self) -> torch.Tensor:
        values = [self.loss_sum, self.correct, self.first_bad_step, self.bad_loss]
        return torch.stack([value.to(self.loss_sum.dtype) for value in values])

    def read(self) -> tuple[float, int, int, float]:
        """The loss sum, correct count, first non-finite step (0: none) and its loss."""
        loss_sum, correct, bad_step, bad_loss = self.values().tolist()
        return loss_sum, int(correct), int(bad_step), bad_loss


class HostCopy:
    """The running metrics copied to the host without waiting for the device (CUDA).

    `exchange` queues a copy into pinned memory behind the steps queued so far and returns the
    newest earlier copy that has arrived (with the images seen by then), or None while it is
    on its way: no call waits for the device. Off CUDA it copies and returns at once.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.host = torch.empty(4, dtype=torch.float64, pin_memory=self.cuda)
        self.event: torch.cuda.Event | None = None
        self.seen = 0

    def exchange(self, metrics: RunningMetrics) -> tuple[tuple, int] | None:
        if not self.cuda:
            self.host.copy_(metrics.values())
            return self.values(), metrics.seen
        latest = None
        if self.event is not None:
            if not self.event.query():
                return None  # the last copy is still queued: start no other into its buffer
            latest = self.values(), self.seen
        self.host.copy_(metrics.values(), non_blocking=True)
        self.seen = metrics.seen
        self.event = torch.cuda.Event()
        self.event.record()
        return latest

    def values(self) -> tuple[float, int, int, float]:
        loss_sum, correct, bad_step, bad_loss = self.host.tolist()
        return loss_sum, int(correct), int(bad_step), bad_loss


def checked(values: tuple[float, int, int, float], epoch: int, steps: int) -> tuple[float, int]:
    """The loss sum and correct count of `RunningMetrics.read()`'s values, once every step's
    loss is known to be finite.

    Raises:
        DivergedError: naming the first step whose loss was NaN or infinite.
    """
    loss_sum, correct, bad_step, bad_loss = values
    if bad_step:
        raise DivergedError(epoch, bad_step, steps, bad_loss)
    return loss_sum, correct


def look(metrics: RunningMetrics, copy: HostCopy, bar, epoch: int, steps: int) -> None:
    """Show the newest metrics that reached the host on the progress bar (checking their
    loss); start the next copy."""
    latest = copy.exchange(metrics)
    if latest is None:
        return
    values, seen = latest
    loss_sum, correct = checked(values, epoch, steps)
    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
