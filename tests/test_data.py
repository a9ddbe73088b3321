"""Training data: finding photos, skipping bad files, crops, and the resumable, sharded epoch order."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.errors import ConfigError, FastNSTError
from fastnst.train.data import (
    EpochBatchSampler,
    PhotoDataset,
    find_images,
    load_photo,
    load_random_crop,
    make_loader,
    split_holdout,
    start_epoch,
)

import image_corpus as corpus


def test_find_images_is_recursive_sorted_and_names_what_it_skips(tmp_path, caplog):
    (tmp_path / "a" / "b").mkdir(parents=True)
    good = [corpus.make_rgb(tmp_path, "z.jpg"), corpus.make_rgb(tmp_path / "a", "m.png"),
            corpus.make_rgb(tmp_path / "a" / "b", "deep.webp")]
    (tmp_path / "notes.txt").write_text("hello")
    empty = corpus.make_empty(tmp_path / "a")
    with caplog.at_level(logging.WARNING, logger="fastnst.data"):
        found = find_images(tmp_path)
    assert found == sorted(good)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "notes.txt" in warning and str(empty) in warning and "empty file" in warning


def test_find_images_errors_name_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        find_images(tmp_path / "missing")
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ConfigError, match=f"{tmp_path}: no image files"):
        find_images(tmp_path)


def test_split_holdout_spreads_disjoint_and_caps_at_a_fifth():
    photos = [f"p{i:02d}" for i in range(20)]
    train, held = split_holdout(photos, 4)
    assert len(held) == 4 and set(train).isdisjoint(held) and sorted(train + held) == photos
    assert held == ["p02", "p07", "p12", "p17"]  # one from each fifth of the list
    assert split_holdout(photos[:7], 4)[1] == ["p03"]  # 7 // 5 = 1
    assert split_holdout(photos[:4], 4) == (photos[:4], [])
    assert split_holdout(photos, 0) == (photos, [])


def test_load_photo_scales_the_short_side_and_crops_the_centre(tmp_path):
    # Three vertical bands red | green | blue, 60 x 20: the centred square crop is all green.
    bands = np.zeros((20, 60, 3), np.uint8)
    bands[:, :20, 0], bands[:, 20:40, 1], bands[:, 40:, 2] = 255, 255, 255
    Image.fromarray(bands).save(tmp_path / "bands.png")
    crop = load_photo(tmp_path / "bands.png", 16)
    assert crop.shape == (3, 16, 16) and crop.dtype == torch.float32
    inner = crop[:, :, 2:-2]  # away from the resampling blur at the band edges
    torch.testing.assert_close(inner.mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]), atol=0.02, rtol=0)


def test_random_crop_is_a_window_of_the_scaled_photo(tmp_path):
    path = corpus.make_rgb(tmp_path, "wide.png", size=(45, 30))
    # The reference: the whole photo scaled to a short side of 20 (30 x 20), every 12 x 12 window of it.
    scaled = torch.from_numpy(np.asarray(Image.open(path).convert("RGB").resize((30, 20), Image.Resampling.BICUBIC),
                                         dtype=np.float32) / 255).permute(2, 0, 1)
    windows = {(top, left) for top in range(20 - 12 + 1) for left in range(30 - 12 + 1)}
    seen = set()
    for seed in range(12):
        crop = load_random_crop(path, 20, 12, torch.Generator().manual_seed(seed))
        assert crop.shape == (3, 12, 12) and crop.dtype == torch.float32
        matches = [w for w in windows if torch.equal(scaled[:, w[0]:w[0] + 12, w[1]:w[1] + 12], crop)]
        assert len(matches) >= 1
        seen.add(matches[0])
    assert len(seen) > 3  # the position really varies with the draw


def test_cropping_dataset_draws_a_new_crop_each_epoch_the_same_in_workers(tmp_path):
    photos = [corpus.make_rgb(tmp_path, f"p{i}.png", size=(60 + 5 * i, 40)) for i in range(4)]
    dataset = PhotoDataset(photos, 32, crop=16, seed=3)
    assert dataset[1].shape == (3, 16, 16)
    torch.testing.assert_close(dataset[1], PhotoDataset(photos, 32, crop=16, seed=3)[1])  # a function of the seed
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1], PhotoDataset(photos, 32, crop=16, seed=3)[1])  # and of the epoch

    def batches(workers: int) -> list[torch.Tensor]:
        loader = make_loader(PhotoDataset(photos, 32, crop=16, seed=3), EpochBatchSampler(4, 2, seed=3), workers)
        drawn = []
        for epoch in range(2):
            start_epoch(loader, epoch)
            drawn += list(loader)
        return drawn

    in_process, in_workers = batches(0), batches(2)
    assert len(in_process) == 4
    for a, b in zip(in_process, in_workers):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="crop size 40 must be between 1 and the image size 32"):
        PhotoDataset(photos, 32, crop=40)


def test_dataset_replaces_unreadable_files_by_the_next_photo_and_warns_once(tmp_path, caplog):
    good = corpus.make_rgb(tmp_path, "a.png", size=(30, 30))
    bad = [corpus.make_truncated(tmp_path, ".jpg"), corpus.make_text_as_jpg(tmp_path)]
    photos = [bad[0], bad[1], good]
    dataset = PhotoDataset(photos, 16)
    with caplog.at_level(logging.WARNING, logger="fastnst.data"):
        first = dataset[0]
        again = dataset[1]
    torch.testing.assert_close(first, load_photo(good, 16))
    torch.testing.assert_close(again, first)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(str(bad[0]) in m for m in messages) == 1 and sum(str(bad[1]) in m for m in messages) == 1


def test_dataset_with_no_readable_photo_says_so(tmp_path):
    dataset = PhotoDataset([corpus.make_text_as_jpg(tmp_path)], 16)
    with pytest.raises(FastNSTError, match="none of the 1 training photos could be read"):
        dataset[0]


def test_every_epoch_is_a_fresh_permutation_repeatable_from_the_seed():
    sampler = EpochBatchSampler(12, 3, seed=5)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 4 and all(len(b) == 3 for b in batches)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(12))
        epochs.append(flat)
    assert epochs[0] != epochs[1] != epochs[2]
    again = EpochBatchSampler(12, 3, seed=5)
    again.set_epoch(1)
    assert [i for b in again for i in b] == epochs[1]
    other = EpochBatchSampler(12, 3, seed=6)
    assert [i for b in other for i in b] != epochs[0]


def test_starting_mid_epoch_yields_the_remaining_batches():
    sampler = EpochBatchSampler(10, 2, seed=1)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, start=2)
    assert list(sampler) == full[2:] and len(sampler) == len(full) - 2
    sampler.set_epoch(3, start=len(full))
    assert list(sampler) == []


def test_ranks_get_disjoint_equal_shards_of_the_same_epoch():
    size, batch, world = 11, 2, 2
    shards = []
    for rank in range(world):
        sampler = EpochBatchSampler(size, batch, seed=3, rank=rank, world_size=world)
        sampler.set_epoch(4)
        shards.append([i for b in sampler for i in b])
    assert len(shards[0]) == len(shards[1]) == 4  # 11 // 2 // 2 = 2 batches of 2 per rank
    assert set(shards[0]).isdisjoint(shards[1])
    order = EpochBatchSampler(size, batch, seed=3).order(4)
    assert shards[0] == order[0::2][:4] and shards[1] == order[1::2][:4]


def test_fewer_photos_than_a_global_batch_samples_with_replacement():
    sampler = EpochBatchSampler(3, 4, seed=0, rank=1, world_size=2)
    assert sampler.replacement and sampler.batches_per_epoch == 1
    seen = set()
    for epoch in range(20):
        sampler.set_epoch(epoch)
        (batch,) = list(sampler)
        assert len(batch) == 4 and all(0 <= i < 3 for i in batch)
        seen.update(batch)
    assert seen == {0, 1, 2}
    assert not EpochBatchSampler(8, 4, world_size=2).replacement


def test_worker_processes_deliver_the_same_batches_as_in_process(tmp_path):
    photos = [corpus.make_rgb(tmp_path, f"p{i}.png", size=(20 + i, 18)) for i in range(6)]
    dataset = PhotoDataset(photos, 16)
    results = []
    for workers in (0, 2):
        loader = make_loader(dataset, EpochBatchSampler(len(dataset), 2, seed=9), workers)
        start_epoch(loader, 1, start=1)
        results.append(list(loader))
    assert len(results[0]) == 2
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
    expected = EpochBatchSampler(6, 2, seed=9).order(1)[2:4]
    torch.testing.assert_close(results[0][0], torch.stack([load_photo(photos[i], 16) for i in expected]))
