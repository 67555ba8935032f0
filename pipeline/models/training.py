"""The training loop, from preloaded tensors: the FP32 model's training and the fine-tuning of QAT.

Batches are drawn by index from tensors already in memory; a DataLoader applying per-item transforms ran about
20x slower here.
"""

import torch
import typer
from torch import nn
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.models.architectures import accuracy


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def train_epoch(model, optimizer, schedule, images, labels, batch_size, generator, description) -> tuple[float, float]:
    """One pass over shuffled preloaded tensors; returns mean loss and accuracy on the batches seen."""
    model.train()
    device = next(model.parameters()).device
    order = torch.randperm(len(labels), generator=generator)
    total_loss, correct = 0.0, 0
    progress = tqdm(order.split(batch_size), desc=description, leave=False, disable=None)
    for index in progress:
        batch, target = images[index].to(device), labels[index].to(device)
        logits = model(batch)
        loss = nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        total_loss += loss.item() * len(index)
        correct += (logits.argmax(1) == target).sum().item()
        progress.set_postfix(loss=f"{loss.item():.4f}")
    return total_loss / len(labels), correct / len(labels)


def lr_schedule(optimizer, name: str, steps: int):
    """`cosine` anneals from the initial rate to zero over all steps, so the last epochs settle the weights: a
    later fine-tune (QAT) then gains from quantization awareness, not from training an unsettled model longer."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def describe(row: dict) -> str:
    return "  ".join(
        f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in row.items()
    )


def fit(
    model,
    images,
    labels,
    *,
    epochs,
    batch_size,
    lr,
    seed,
    schedule="cosine",
    device=torch.device("cpu"),
    test=None,
    after_epoch=None,
) -> list[dict]:
    """Train `model` in place; return one row per epoch (loss, accuracy, and test accuracy if `test` is given).

    `after_epoch(epoch)` runs at the end of each epoch (QAT freezes its observers there).
    """
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = lr_schedule(optimizer, schedule, epochs * -(-len(labels) // batch_size))
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        loss, train_accuracy = train_epoch(
            model, optimizer, scheduler, images, labels, batch_size, generator, f"epoch {epoch}/{epochs}"
        )
        row = {"epoch": epoch, "train_loss": loss, "train_accuracy": train_accuracy}
        if test is not None:
            row["test_accuracy"] = accuracy(model.eval(), *test)
        typer.echo(describe(row))
        history.append(row)
        if after_epoch is not None:
            after_epoch(epoch)
    model.cpu().eval()
    return history
