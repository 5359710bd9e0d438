"""The in-memory path's batches: index slices of one in-memory uint8 tensor, made into normalised, augmented float
batches on the device.

`TensorBatches` is the loader (order a pure function of seed and epoch, position saved in checkpoints);
`normalize_uint8` and `augment` run per batch in `FashionMNISTDataModule.on_after_batch_transfer`, so nothing goes
through PIL image by image. export.py's predictors (and so predict.py) scale with the same `normalize_uint8`: a model
sees the same input in training, evaluation and prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

# of the 60k training pixels scaled to [0, 1]
MEAN, STD = 0.2860, 0.3530


class TensorBatches:
    """Batches as index slices of in-memory tensors; one pass per `iter()` (one epoch).

    The training order is a pure function of (seed, epoch): epoch e takes the e-th permutation drawn from a
    generator seeded with `seed`, e read from `epoch_fn` (the trainer's epoch) when the pass starts. The position
    is state: `state_dict()` (seed, epoch, batches handed out) goes into every checkpoint (through the DataModule's
    state_dict) and comes back through `load_state_dict()` before the first batch, so a run resumed mid-epoch goes
    on with the next batch of the same permutation.

    With several processes (DDP) each rank takes a disjoint, strided share of the epoch's order. When shuffling
    (training) the last `n % world_size` items of each epoch's permutation are dropped so every rank runs the same
    number of steps (an extra step on one rank would hang the others' gradient all-reduce); evaluation keeps every
    item, and uneven shards are fine there because metrics sync once at epoch end.

    `flip_alternate` (airbench's alternating flip): each training image is mirrored left-right in every other
    epoch, in epoch 0 a random half (a fixed random bit per image, drawn from `seed`), so over two epochs every
    image is seen both ways instead of at random.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        epoch_fn: Callable[[], int] | None = None,
        flip_alternate: bool = False,
    ):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.flip_alternate = flip_alternate
        self.shuffle, self.drop_last, self.rank, self.world_size = shuffle, drop_last, rank, world_size
        self.seed, self.epoch_fn = seed, epoch_fn
        # the pass under way (-1: none yet) and how many batches it has handed out
        self.epoch, self.done = -1, 0
        self._resume_at: tuple[int, int] | None = None
        # permutations drawn from it so far (-1: unseeded)
        self._generator, self._draws = torch.Generator(), -1

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "batches": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = state["seed"]
        self._resume_at = (state["epoch"], state["batches"])
        self._draws = -1

    def _n_used(self) -> int:
        n = len(self.x)
        return n - n % self.world_size if self.shuffle else n

    def _n_local(self) -> int:
        return len(range(self.rank, self._n_used(), self.world_size))

    def __len__(self) -> int:
        n = self._n_local()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's order: the e-th draw, as an uninterrupted run makes them (earlier draws replayed if needed)."""
        if self._draws < 0 or self._draws > epoch:
            self._generator.manual_seed(self.seed)
            self._draws = 0
        while True:
            perm = torch.randperm(len(self.x), generator=self._generator)
            self._draws += 1
            if self._draws > epoch:
                return perm

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self.epoch + 1
        resume_epoch, start = self._resume_at or (epoch, 0)
        self._resume_at = None
        self.epoch, self.done = epoch, start if resume_epoch == epoch else 0
        order = self._permutation(epoch) if self.shuffle else torch.arange(len(self.x))
        # the order is drawn on the CPU (same permutation on every device); indices follow the data to its device
        order = order[: self._n_used()][self.rank :: self.world_size].to(self.x.device)
        flips = None
        if self.flip_alternate:
            # (N,) bool: the images mirrored this epoch
            bits = torch.randint(0, 2, (len(self.x),), generator=torch.Generator().manual_seed(self.seed + 1))
            flips = (bits == epoch % 2).to(self.x.device)
        for i in range(self.done, len(self)):
            # counted before the batch is handed out: a checkpoint taken after it resumes past it
            self.done = i + 1
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.x[idx]
            if flips is not None:
                # x: (B, H, W) uint8, mirrored along W where the image's bit says so
                x = torch.where(flips[idx][:, None, None], x.flip(-1), x)
            yield x, self.y[idx]


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, 28, 28) uint8 -> (B, 1, 28, 28) float, scaled to [0, 1] and standardised with the train stats."""
    return (x.unsqueeze(1).float() / 255.0 - MEAN) / STD


def augment(x: torch.Tensor, pad: int, flip: bool, erase: float = 0.0) -> torch.Tensor:
    """Per-batch random translation (by up to `pad` px, zero fill), horizontal flip and random erasing (with
    probability `erase` per image, see `random_erase`); x: (B, 1, H, W), normalised."""
    b, _, h, w = x.shape
    if pad > 0:
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
        dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
        # gather each image's crop with one indexed read: rows (B, H, 1), cols (B, 1, W)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
        x = xp[torch.arange(b, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)
    if flip:
        mask = torch.rand(b, device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if erase > 0:
        x = random_erase(x, erase)
    return x


def random_erase(
    x: torch.Tensor, p: float, scale: tuple[float, float] = (0.02, 0.4), ratio: float = 0.3
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017), batched: with probability `p` per image, a rectangle of area
    U(scale) x H x W and aspect ratio h/w log-uniform in [ratio, 1/ratio] is filled with uniform random pixel
    values in [0, 1] (normalised like the images). x: (B, 1, H, W) normalised -> same shape and dtype.
    The paper redraws a rectangle that does not fit; here its sides are clipped to the image instead."""
    b, _, h, w = x.shape
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(*scale) * h * w
    log_r = torch.empty(b, device=dev).uniform_(math.log(ratio), -math.log(ratio))
    # (B,) rectangle heights
    eh = (area * log_r.exp()).sqrt().round().clamp(1, h).long()
    ew = (area / log_r.exp()).sqrt().round().clamp(1, w).long()
    # uniform in [0, h - eh]
    top = (torch.rand(b, device=dev) * (h - eh + 1)).long()
    left = (torch.rand(b, device=dev) * (w - ew + 1)).long()
    # (1, H, 1)
    rows = torch.arange(h, device=dev)[None, :, None]
    # (1, 1, W)
    cols = torch.arange(w, device=dev)[None, None, :]
    # (B, H, W)
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + eh)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + ew)[:, None, None])
    )
    on = torch.rand(b, device=dev) < p
    # (B, 1, H, W)
    mask = (inside & on[:, None, None]).unsqueeze(1)
    noise = (torch.rand(x.shape, device=dev, dtype=x.dtype) - MEAN) / STD
    return torch.where(mask, noise, x)
