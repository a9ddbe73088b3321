"""Training photos: finding them, reading them robustly, and the order they are drawn in.

Any folder of photos works, flat (COCO's ``train2014/``) or nested: ``find_images``
walks it recursively. Files are only *listed* up front; a file that turns out to
be corrupt when a worker decodes it is skipped with a warning naming it and the
next photo takes its place, so one bad file in 80,000 never ends a long run.

The order is owned by ``EpochBatchSampler``: a fresh shuffle every epoch computed
from ``(seed, epoch)`` alone, split between distributed ranks, and able to start
in the middle of an epoch. A resumed run therefore needs only the epoch number and
the batch position to draw exactly the batches an uninterrupted run would have.
Random crops (``crop``) are drawn from ``(seed, epoch, photo)`` for the same reason:
a photo gets a new crop every epoch, the same one in every worker and after a resume.

Tensors are (3, S, S) float32 RGB in 0–1 (a DataLoader stacks them to (B, 3, S, S)),
S being the crop size when cropping and the image size otherwise.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from fastnst.errors import ConfigError, FastNSTError, ImageError, first_line
from fastnst.files import show_path, walk_files
from fastnst.images import is_image_file, open_image, to_tensor
from fastnst.train import rng

log = logging.getLogger(__name__)


def find_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursively), sorted, so the list is the same on every machine.

    Files without an image suffix and empty files are left out with one warning
    naming them; decoding problems are found later, by ``PhotoDataset``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--data {root}: not a folder; give a folder of training photos (e.g. COCO train2014/)")
    files, unreadable = walk_files(root, keep=lambda name: True)
    for folder, why in unreadable:
        log.warning("cannot list %s (%s): its photos are left out of training", show_path(folder), why)
    photos, ignored = [], []
    for path in sorted(files):
        if not is_image_file(path):
            ignored.append(f"{show_path(path)} (not an image suffix)")
        elif _size(path) == 0:
            ignored.append(f"{show_path(path)} (empty file)")
        else:
            photos.append(path)
    if ignored:
        shown = "; ".join(ignored[:5]) + (f"; and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        log.warning("skipping %d file(s) under %s: %s", len(ignored), root, shown)
    if not photos:
        raise ConfigError(f"--data {root}: no image files found (looked recursively for .jpg, .png, .webp, ...)")
    return photos


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def split_holdout(photos: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    """(training photos, held-out photos): ``count`` photos spread evenly over the sorted list.

    At most a fifth of the photos is held out, so a tiny folder keeps most of its
    photos for training (a folder of fewer than 5 holds none out).
    """
    count = min(count, len(photos) // 5)
    if count <= 0:
        return list(photos), []
    stride = len(photos) // count
    held = set(range(stride // 2, len(photos), stride)[:count])
    return [p for i, p in enumerate(photos) if i not in held], [photos[i] for i in sorted(held)]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch (its order, worker seeds, crops): a function of both alone."""
    return seed * 100_003 + epoch


def load_photo(path: str | Path, size: int) -> torch.Tensor:
    """A photo scaled so its short side is ``size`` and centre-cropped: (3, size, size) in 0–1."""
    image = open_image(path)
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)
    return to_tensor(image)


MAX_ASPECT = 16  # a photo longer than this many times its width is refused for random crops (memory)


def load_random_crop(path: str | Path, size: int, crop: int, generator: torch.Generator) -> torch.Tensor:
    """A photo scaled so its short side is ``size``, then a random ``crop`` square of it: (3, crop, crop) in 0–1.

    Random crops of a larger scale give a small photo folder many more distinct
    training images, at the scale of the photos the model will later stylize.
    """
    image = open_image(path)
    if max(image.size) > MAX_ASPECT * min(image.size):
        raise ImageError(path, f"{image.width}x{image.height} is too elongated to train on (over {MAX_ASPECT}:1; "
                               "scaled to the training size it would take gigabytes)")
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left = int(torch.randint(width - crop + 1, (), generator=generator))
    top = int(torch.randint(height - crop + 1, (), generator=generator))
    return to_tensor(image.crop((left, top, left + crop, top + crop)))


class PhotoDataset(Dataset):
    """Photos as (3, S, S) tensors; an unreadable file is replaced by the next readable one.

    Without ``crop`` a photo is ``load_photo(path, size)`` (S = size); with it,
    ``load_random_crop`` (S = crop) seeded by ``seed``, the epoch (``set_epoch``)
    and the photo's index. The replacement of a bad file is deterministic (the
    next index, wrapping around), so runs stay repeatable. Each bad file is
    warned about once per process.
    """

    def __init__(self, photos: list[Path], size: int, crop: int | None = None, seed: int = 0) -> None:
        if not photos:
            raise ConfigError("no training photos left (all were held out or skipped)")
        if crop is not None and not 0 < crop <= size:
            raise ConfigError(f"crop size {crop} must be between 1 and the image size {size}")
        self.photos, self.size, self.crop, self.seed = list(photos), size, crop, seed
        self.epoch = 0
        self._warned: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> torch.Tensor:
        for offset in range(len(self.photos)):
            i = (index + offset) % len(self.photos)
            try:
                if self.crop is None:
                    return load_photo(self.photos[i], self.size)
                draw = epoch_seed(self.seed, self.epoch) * 1_000_003 + i
                return load_random_crop(self.photos[i], self.size, self.crop, rng.generator(draw))
            except Exception as exc:  # noqa: BLE001 - one odd photo (or a decoder bug) must not end a long run
                if i not in self._warned:
                    self._warned.add(i)
                    reason = str(exc) if isinstance(exc, ImageError) else \
                        f"{show_path(self.photos[i])}: {type(exc).__name__}: {first_line(exc)}"
                    log.warning("skipping unreadable training photo %s", reason)
        raise FastNSTError(f"none of the {len(self.photos)} training photos could be read (see the warnings above)")


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices for one rank, reshuffled every epoch, resumable mid-epoch.

    An epoch is one pass over the photos: a permutation seeded by ``seed`` and
    the epoch number, dealt round-robin to the ``world_size`` ranks, cut into
    full batches (the remainder is dropped so every rank takes the same number
    of steps). With fewer photos than one global batch (``batch_size *
    world_size``) an epoch is instead one batch drawn *with replacement*.
    ``set_epoch(epoch, start)`` chooses the epoch and the first batch to yield.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.replacement = size < batch_size * world_size
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        if self.replacement:
            return 1
        return self.size // self.world_size // self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> list[int]:
        """The global index order of ``epoch`` (all ranks), a pure function of the seed and the epoch."""
        generator = rng.generator(epoch_seed(self.seed, epoch))
        if self.replacement:
            return torch.randint(self.size, (self.batch_size * self.world_size,), generator=generator).tolist()
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self):
        mine = self.order(self.epoch)[self.rank::self.world_size]
        for b in range(self.start, self.batches_per_epoch):
            yield mine[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start)


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; only the main process reacts (it saves a
    # checkpoint), so the workers must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def start_epoch(loader: DataLoader, epoch: int, start: int = 0) -> None:
    """Point ``loader`` at batch ``start`` of ``epoch``; its generator (worker seeds) is reseeded from the epoch.

    Everything that decides what the next batch holds is then a function of
    (seed, epoch, start), which is what makes a resumed run exact.
    """
    sampler = loader.batch_sampler
    sampler.set_epoch(epoch, start)
    loader.dataset.set_epoch(epoch)
    loader.generator.manual_seed(rng.fold(epoch_seed(sampler.seed, epoch)))


def make_loader(dataset: PhotoDataset, sampler: EpochBatchSampler, workers: int, pin_memory: bool = False
                ) -> DataLoader:
    """A DataLoader over ``sampler``'s batches with ``workers`` decoding processes (0: in this process).

    With random crops the workers start afresh every epoch, so they see the dataset's new epoch.
    """
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0 and dataset.crop is None,
                      worker_init_fn=_ignore_interrupts if workers else None,
                      generator=rng.generator(sampler.seed))
