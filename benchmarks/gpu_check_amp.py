"""gpu_check's mixed-precision, memory-format, compile and determinism checks (part a).

Each trains or evaluates a small timm model through the real engine (create_trainer,
backward, optimizer_step) and device helpers (amp_context, compile_model, configure_determinism) on
generated data that a model can learn: noise plus a colour per class.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import torch

from pipeline.config.model_settings import ModelParams
from pipeline.models.registry import create_model
from pipeline.training.device import (
    amp_context,
    compile_model,
    configure_determinism,
    seed_everything,
)
from pipeline.training.engine import backward, create_trainer, optimizer_step

CLASSES = 10
# Stated tolerances: max |logits difference| over max |fp32 logits|.
AMP_TOLERANCE = {"bfloat16": 0.05, "float16": 0.01}
LAYOUT_TOLERANCE = 0.01  # cuDNN may use TF32 and other kernels per memory format


def learnable_data(n: int, size: int, device: torch.device, seed: int = 0):
    """`n` images of noise shifted by a per-class colour, with their labels."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, CLASSES, (n,), generator=generator)
    colours = torch.randn(CLASSES, 3, 1, 1, generator=torch.Generator().manual_seed(99))
    images = torch.randn(n, 3, size, size, generator=generator) * 0.5 + colours[targets]
    return images.to(device), targets.to(device)


def small_trainer(cfg, device: torch.device, dtype: torch.dtype | None, steps: int):
    """A fresh small model and the engine's Trainer, autocast forced to `dtype` (None: fp32)."""
    seed_everything(0)
    model = create_model(cfg.amp_model, CLASSES).to(device)
    hp = ModelParams(image_size=cfg.amp_size, batch_size=cfg.amp_batch, epochs=1, amp=False)
    hp = hp.model_copy(update={"optimizer": hp.optimizer.model_copy(update={"lr": 2e-3})})
    trainer = create_trainer(model, hp, steps, device)
    if dtype is not None:
        autocast = partial(torch.autocast, device_type=device.type, dtype=dtype)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        trainer = dataclasses.replace(trainer, autocast=autocast, scaler=scaler)
    return trainer


def train_steps(trainer, images, targets, steps: int, batch: int) -> list[float]:
    """`steps` optimizer steps over the data in order; the loss of each."""
    losses = []
    trainer.model.train()
    for step in range(steps):
        start = step * batch % (len(images) - batch + 1)
        x, y = images[start : start + batch], targets[start : start + batch]
        with trainer.autocast():
            loss = trainer.loss_fn(trainer.model(x), y)
        trainer.optimizer.zero_grad(set_to_none=True)
        backward(trainer, loss)
        optimizer_step(trainer)
        losses.append(loss.item())
    return losses


def amp_training(cfg, device: torch.device, dtype: torch.dtype) -> dict:
    """A few hundred steps under autocast: the loss falls, nothing overflows."""
    if device.type != "cuda" and dtype == torch.float16:
        return {"status": "skipped: no CUDA (fp16 with GradScaler needs it)"}
    images, targets = learnable_data(cfg.amp_images, cfg.amp_size, device)
    trainer = small_trainer(cfg, device, dtype, cfg.amp_steps)
    losses = train_steps(trainer, images, targets, cfg.amp_steps, cfg.amp_batch)
    window = max(1, len(losses) // 10)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None
    bad = sum(not torch.isfinite(torch.tensor(loss)) for loss in losses)
    finite_scale = scale is None or (0 < scale < float("inf"))
    return {
        "status": "pass" if last < 0.7 * first and bad == 0 and finite_scale else "fail",
        "dtype": str(dtype).removeprefix("torch."),
        "steps": len(losses),
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
        "nonfinite_losses": bad,
        "scaler_scale": scale,
    }


def check_bf16(cfg, device):
    return amp_training(cfg, device, torch.bfloat16)


def check_fp16(cfg, device):
    return amp_training(cfg, device, torch.float16)


def relative_gap(reference: torch.Tensor, other: torch.Tensor) -> float:
    reference, other = reference.float(), other.float()
    return ((reference - other).abs().max() / reference.abs().max().clamp_min(1e-6)).item()


@torch.no_grad()
def eval_logits(model, images, autocast=None, channels_last=False) -> torch.Tensor:
    model.eval()
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast() if autocast else torch.autocast(images.device.type, enabled=False):
        return model(images).float()


def check_amp_agreement(cfg, device):
    """fp32 and AMP validation logits of the same trained weights agree within tolerance."""
    images, targets = learnable_data(cfg.amp_images, cfg.amp_size, device)
    trainer = small_trainer(cfg, device, None, cfg.amp_steps // 4)
    train_steps(trainer, images, targets, cfg.amp_steps // 4, cfg.amp_batch)
    valid, _ = learnable_data(cfg.amp_batch, cfg.amp_size, device, seed=1)
    reference = eval_logits(trainer.model, valid)
    dtypes = [torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    result, ok = {}, True
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        gap = relative_gap(
            reference,
            eval_logits(
                trainer.model, valid, partial(torch.autocast, device_type=device.type, dtype=dtype)
            ),
        )
        result[f"{name}_rel_gap"] = round(gap, 5)
        result[f"{name}_tolerance"] = AMP_TOLERANCE[name]
        ok &= gap <= AMP_TOLERANCE[name]
    pipeline_autocast, _ = amp_context(device, True)  # what the pipeline would use here
    result["pipeline_autocast"] = getattr(pipeline_autocast, "keywords", {}).get("dtype", "fp32")
    result["pipeline_autocast"] = str(result["pipeline_autocast"])
    return {"status": "pass" if ok else "fail", **result}


def counting_backend(device: torch.device):
    """A torch.compile backend that counts the graphs it compiles (inductor on CUDA)."""
    calls = {"graphs": 0}

    def backend(graph_module, example_inputs):
        calls["graphs"] += 1
        if device.type == "cuda":
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(graph_module, example_inputs)
        return graph_module.forward  # eager on the CPU smoke run: no C++ toolchain needed

    return backend, calls


def check_layout_compile(cfg, device):
    """channels_last and torch.compile on/off: same logits; no recompile across batches."""
    torch._dynamo.reset()
    seed_everything(0)
    model = create_model(cfg.amp_model, CLASSES).to(device).eval()
    batches = [learnable_data(cfg.amp_batch, cfg.amp_size, device, seed=s)[0] for s in range(4)]
    reference = eval_logits(model, batches[0])
    gaps = {"channels_last": relative_gap(reference, eval_logits(model, batches[0], None, True))}
    model = model.to(memory_format=torch.channels_last)
    backend, calls = counting_backend(device)
    compile_model(model, cfg.amp_batch, backend=backend)
    gaps["compiled_channels_last"] = relative_gap(
        reference, eval_logits(model, batches[0], None, True)
    )
    after_first = calls["graphs"]
    for images in batches[1:]:
        eval_logits(model, images, None, True)
    eval_logits(model, batches[1][: cfg.amp_batch // 2], None, True)  # a smaller last batch
    recompiles = calls["graphs"] - after_first
    ok = recompiles == 0 and max(gaps.values()) <= LAYOUT_TOLERANCE
    return {
        "status": "pass" if ok else "fail",
        **{f"{name}_rel_gap": round(gap, 6) for name, gap in gaps.items()},
        "tolerance": LAYOUT_TOLERANCE,
        "graphs_first_batch": after_first,
        "recompiles_after_first_batch": recompiles,
        "batches": len(batches) + 1,
    }


def check_deterministic(cfg, device):
    """`train.deterministic: true` run twice: identical logits."""
    configure_determinism(True, device)
    try:
        runs = []
        for _ in range(2):
            images, targets = learnable_data(cfg.amp_images, cfg.amp_size, device)
            autocast, _ = amp_context(device, True)
            trainer = small_trainer(cfg, device, None, cfg.det_steps)
            trainer = dataclasses.replace(trainer, autocast=autocast)
            train_steps(trainer, images, targets, cfg.det_steps, cfg.amp_batch)
            runs.append(eval_logits(trainer.model, images[: cfg.amp_batch]))
    finally:
        configure_determinism(False, device)
    same = torch.equal(runs[0], runs[1])
    gap = (runs[0] - runs[1]).abs().max().item()
    return {"status": "pass" if same else "fail", "identical": same, "max_abs_diff": gap}
