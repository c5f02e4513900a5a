"""Datasets and loaders: one scan, one decoder, an in-memory uint8 cache, and batch-wise tensor augmentation.

Small datasets (the common case) are decoded once into a ``(N, C, H, W)`` uint8 tensor and served from memory;
larger ones stream through DataLoader workers. Both loaders yield the same :class:`Batch`, and training,
validation, evaluation and prediction all turn uint8 batches into model input with :class:`Preprocessor`.
"""
import logging
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from easycls.data.images import ImageReadError, read_image
from easycls.data.scan import Samples, report_skipped

log = logging.getLogger(__name__)
PROGRESS_DELAY = 1.0  # seconds before the decoding bar appears: small datasets decode without one



class Batch(NamedTuple):
    """uint8 images ``(B, C, H, W)``, labels, dataset indices, and ``(index, reason)`` of files that failed."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    failures: List[Tuple[int, str]]


def decode_all(samples: Samples, channels: int, size, workers: int,
               progress: bool = False) -> Tuple[torch.Tensor, Samples]:
    """Decode every image once into a uint8 tensor; unreadable files are named, counted and left out.
    ``progress`` shows a progress bar (large photos take a while).

    Each thread decodes runs of 32 images into a numpy view of the tensor: per-image futures and tensor indexing
    had cost three times the decoding of a small PNG, while runs still share large JPEGs out across the threads.
    """
    n, run = len(samples.paths), 32
    out = torch.empty((n, channels, *size), dtype=torch.uint8)
    view = out.numpy()

    def decode_run(start: int) -> List[Tuple[int, str]]:
        failed = []
        for i in range(start, min(start + run, n)):
            try:
                view[i] = read_image(samples.paths[i], channels, size).transpose(2, 0, 1)
            except ImageReadError as exc:
                failed.append((i, str(exc)))
        return failed

    failed = []
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=n, desc="decoding into memory", unit="img", dynamic_ncols=True, leave=False,
                 delay=PROGRESS_DELAY, disable=not progress) as bar:
        for start, part in zip(range(0, n, run), pool.map(decode_run, range(0, n, run))):
            failed += part
            bar.update(min(run, n - start))
    report_skipped([(samples.paths[i], reason) for i, reason in failed])
    if not failed:
        return out, samples
    bad = {i for i, _ in failed}
    ok = [i for i in range(n) if i not in bad]
    return out[ok], samples.subset(ok)


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world: int = 1,
                even: bool = False) -> torch.Tensor:
    """This rank's indices for one epoch: a seeded shuffle per epoch, split across ``world`` ranks.

    ``even`` pads by repeating a few indices so every rank gets the same count (training needs equal steps).
    """
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    else:
        order = torch.arange(n)
    if even and world > 1 and n % world:
        order = torch.cat([order, order[: world - n % world]])
    return order[rank::world]


class EpochSampler(Sampler):
    """A Sampler over :func:`epoch_order`; call ``set_epoch`` before each epoch.

    With ``weights`` it draws the epoch's images with replacement in proportion to them instead (an image of weight
    0 is never drawn); each rank draws its own share, seeded by seed, epoch and rank, so the epoch keeps its length.
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1, even: bool = False,
                 weights: Optional[Sequence[float]] = None):
        self.n, self.shuffle, self.seed, self.rank, self.world, self.even = n, shuffle, seed, rank, world, even
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use ``epoch``'s order from its ``start``-th index on (an interrupted epoch resumes after the images it
        had trained on)."""
        self.epoch, self.start = epoch, start

    def __iter__(self):
        if self.weights is not None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1_009 + self.rank)
            order = torch.multinomial(self.weights, self._epoch_len(), replacement=True, generator=generator)
        else:
            order = epoch_order(self.n, self.shuffle, self.seed, self.epoch, self.rank, self.world, self.even)
        return iter(order[self.start:].tolist())

    def _epoch_len(self) -> int:
        if self.even or self.weights is not None:
            return math.ceil(self.n / self.world)
        return len(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return max(self._epoch_len() - self.start, 0)


class MemoryLoader:
    """Batches sliced from an in-memory uint8 tensor: no workers, no per-image Python work."""

    def __init__(self, images: torch.Tensor, samples: Samples, batch_size: int, sampler: EpochSampler,
                 drop_last: bool = False):
        self.images, self.samples = images, samples
        self.labels = torch.as_tensor(samples.labels, dtype=torch.long)
        self.batch_size, self.sampler, self.drop_last = batch_size, sampler, drop_last

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Serve ``epoch``'s batches from its ``start_batch``-th on."""
        self.sampler.set_epoch(epoch, start_batch * self.batch_size)

    def __len__(self) -> int:
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield Batch(self.images[idx], self.labels[idx], idx, [])


class FileDataset(Dataset):
    """Decodes one file per item; a failure is returned as a reason, never as another image."""

    def __init__(self, samples: Samples, channels: int, size):
        self.samples, self.channels, self.size = samples, channels, tuple(size)

    def __len__(self) -> int:
        return len(self.samples.paths)

    def __getitem__(self, i: int):
        """``(HWC uint8 array or None, label, index, failure reason)``; tensors are made once per batch."""
        try:
            return read_image(self.samples.paths[i], self.channels, self.size), self.samples.labels[i], i, ""
        except ImageReadError as exc:
            return None, self.samples.labels[i], i, str(exc)


def collate(items) -> Batch:
    good = [it for it in items if it[0] is not None]
    if good:
        images = torch.from_numpy(np.stack([it[0] for it in good])).permute(0, 3, 1, 2)
    else:
        images = torch.empty(0, dtype=torch.uint8)
    return Batch(images, torch.tensor([it[1] for it in good], dtype=torch.long),
                 torch.tensor([it[2] for it in good], dtype=torch.long),
                 [(it[2], it[3]) for it in items if it[0] is None])


class StreamLoader(DataLoader):
    """A DataLoader of :class:`FileDataset` yielding :class:`Batch`; memory stays flat whatever the size.

    ``pin_memory`` (for a CUDA run) makes the copies to the GPU asynchronous. The workers' seeds come from the
    loader's own generator: the global one, which augmentation draws from, is left alone, so a resumed run draws
    as the uninterrupted one did (persistent workers take a seed once, at the first epoch only).
    """

    def __init__(self, dataset: FileDataset, batch_size: int, sampler: EpochSampler, workers: int,
                 drop_last: bool = False, pin_memory: bool = False):
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                         drop_last=drop_last, persistent_workers=workers > 0, pin_memory=pin_memory,
                         prefetch_factor=4 if workers > 0 else None,
                         generator=torch.Generator().manual_seed(sampler.seed))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Serve ``epoch``'s batches from its ``start_batch``-th on."""
        self.sampler.set_epoch(epoch, start_batch * self.batch_size)

    @property
    def samples(self) -> Samples:
        return self.dataset.samples


class PrefetchLoader:
    """Streams batches in file order; memory is bounded by ``ahead`` batches.

    For evaluation and prediction. With ``ahead`` > 0 a small thread pool decodes whole batches while the model
    runs (right when the model runs on a GPU; threads hand over arrays without inter-process copies, and PNG/JPEG
    decoding releases the GIL). With ``ahead`` = 0 each batch is decoded in the calling thread between model
    calls: on a CPU the model's threads already use every core. Decoding beside them stalls them at every parallel
    barrier, and splitting a batch across threads is slower still (measured: 45 us per image against 26 us, from
    handing the GIL back and forth around each small file read and decode).
    """

    def __init__(self, dataset: FileDataset, batch_size: int, workers: int, ahead: int = 0):
        self.dataset, self.batch_size = dataset, batch_size
        self.workers, self.ahead = max(1, workers), ahead

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def _batch(self, number: int) -> Batch:
        start = number * self.batch_size
        return collate([self.dataset[i] for i in range(start, min(start + self.batch_size, len(self.dataset)))])

    def __iter__(self) -> Iterator[Batch]:
        if self.ahead == 0:
            yield from map(self._batch, range(len(self)))
            return
        with ThreadPoolExecutor(self.workers) as pool:
            pending = deque(pool.submit(self._batch, b) for b in range(min(self.ahead, len(self))))
            for number in range(len(pending), len(self) + len(pending)):
                batch = pending.popleft().result()
                if number < len(self):
                    pending.append(pool.submit(self._batch, number))
                yield batch


class Preprocessor:
    """uint8 batch -> normalised float model input; the one preprocessing path for train, eval and predict.

    In training, ``augment`` (uint8 -> float in [0, 255], see :mod:`easycls.augment`) runs before the
    normalisation and ``erase`` (random erasing) after it, as timm orders them.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int, device: torch.device,
                 channels_last: bool = False, augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 erase: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        shape = (1, channels, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).expand(channels).reshape(shape)
        std_t = torch.tensor(std, dtype=torch.float32).expand(channels).reshape(shape)
        self.scale = (1.0 / (255.0 * std_t)).to(device)
        self.shift = (-mean_t / std_t).to(device)
        self.device, self.channels_last, self.augment, self.erase = device, channels_last, augment, erase

    def __call__(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True)
        x = self.augment(x) if train and self.augment is not None else x.float()
        x = torch.addcmul(self.shift, x, self.scale)
        if train and self.erase is not None:
            x = self.erase(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
