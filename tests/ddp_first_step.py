"""Run by tests/test_train.py under torchrun with 2 processes (not a test module itself).

Each rank computes the first discriminator and generator gradients on its half of a global
batch of 8 (dropout off) through DistributedDataParallel, with separate and with mixed
real/generated discriminator batches; rank 0 saves the averaged gradients.
Then both ranks run a short real training run (`caloquant.train.train`) into OUT/run.
Usage: torchrun --nproc_per_node 2 tests/ddp_first_step.py TRAIN.h5 VAL.h5 OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from caloquant.train import TrainConfig, Trainer, ddp, train
from caloquant.train.data import ShowerStream, split_rows

MIXED_FAKE_SCALE = (
    0.5  # stand-in "generated" showers of the mixed-batch check: the real ones, flipped and halved
)


def main() -> None:
    train_file, val_file, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    d = ddp.init()
    assert d.world == 2
    torch.set_num_threads(1)
    cfg = TrainConfig(
        data=[train_file],
        out=str(out / "run"),
        model="conv2d",
        width=0.1,
        batch=8,
        threads=1,
        val_data=val_file,
        val_n=30,
        epochs=1,
        # the authors' update rule is the thing under test
        energy_stage=False,
        physics_loss=0.0,
        generator_dropout=True,
    )
    tr = Trainer(cfg, d)
    for m in (tr.g_raw, tr.d_raw):
        for sub in m.modules():
            if isinstance(sub, torch.nn.Dropout):
                sub.p = 0.0
    parts, _ = split_rows(cfg.data, [12], None)
    s, e = next(
        ShowerStream(
            parts, 8, cfg.seed, d.rank, d.world, cell_scale=100.0, cell_threshold=1e-6
        ).epoch(0)
    )
    half = slice(4 * d.rank, 4 * d.rank + 4)
    noise = torch.randn(8, 200, generator=torch.Generator().manual_seed(3))
    e_fake = torch.linspace(100.0, 400.0, 8, dtype=torch.float64)
    tr.discriminator_backward(torch.from_numpy(s), torch.from_numpy(e), True, torch.full((4,), 0.9))
    tr.generator_backward(noise[half], e_fake[half])
    grads = {
        f"{name}.{k}": p.grad.clone()
        for name, mod in (("d", tr.d_raw), ("g", tr.g_raw))
        for k, p in mod.named_parameters()
    }
    # the mixed-batch path (conv2d's recipe): real and "generated" showers in one discriminator
    # batch, and the generator's showers next to the real ones
    real = torch.from_numpy(s)
    fake = MIXED_FAKE_SCALE * real.flip(0)
    is_real = torch.cat([torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)])
    tr.discriminator_backward(
        torch.cat([real, fake]),
        torch.cat([torch.from_numpy(e), e_fake[half]]),
        is_real,
        torch.where(is_real, 0.9, 0.1),
    )
    tr.generator_backward(noise[half], e_fake[half], context=real)
    grads |= {
        f"mixed.{name}.{k}": p.grad.clone()
        for name, mod in (("d", tr.d_raw), ("g", tr.g_raw))
        for k, p in mod.named_parameters()
    }
    if d.main:
        torch.save(grads, out / "grads.pt")
    train(cfg)
    ddp.shutdown(d)


if __name__ == "__main__":
    main()
