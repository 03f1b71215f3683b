"""Data: both source kinds, the cache, the paper's preprocessing and augmentation, and bad input."""
import os
import tarfile
import zipfile

import numpy as np
import pytest
import torch

from resnet import load_cifar10
from resnet.data import (CLASSES, PAD, Batches, BatchSampler, DataError, balanced_subset, crop_flip,
                         random_crop_flip, to_device, validation_split)

from .conftest import random_images, write_official, write_tree


# --- sources -------------------------------------------------------------------------------------

def test_jpeg_stand_in_has_the_official_counts_and_classes(real_data):
    assert real_data.train_x.shape == (50_000, 32, 32, 3) and real_data.test_x.shape == (10_000, 32, 32, 3)
    assert real_data.train_x.dtype == np.uint8
    assert np.bincount(real_data.train_y).tolist() == [5000] * 10
    assert np.bincount(real_data.test_y).tolist() == [1000] * 10
    assert len(real_data.checksum) == 64


def test_official_format_is_read_exactly(tmp_path, isolated_cache):
    folder = write_official(tmp_path / "cifar-10-batches-py")
    ds = load_cifar10(str(folder))
    assert ds.train_x.shape == (20, 32, 32, 3) and ds.test_x.shape == (10, 32, 32, 3)
    # a record is 3,072 bytes, channel-major then row-major: byte 1024 + 1 is the green value of pixel (row 0, col 1)
    record = random_images(20)[0].transpose(2, 0, 1).reshape(-1)
    assert ds.train_x[0, 0, 1, 1] == record[1024 + 1] and ds.train_x[0, 1, 0, 2] == record[2048 + 32]
    assert np.array_equal(ds.train_x, random_images(20))  # every image, in order, across the five batches
    assert np.array_equal(ds.test_x, random_images(10, seed=1))
    assert ds.train_y.tolist() == np.repeat(np.arange(10), 2).tolist()
    assert ds.source == "cifar-10-batches-py"


def pack(tree, kind: str, folder):
    """The image tree ``tree`` as it is ('folder') or packed into ``folder``/data.{zip,tar,tar.gz}."""
    if kind == "folder":
        return tree
    path = folder / f"data.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            for f in tree.rglob("*.png"):
                z.write(f, f.relative_to(tree.parent).as_posix())
    else:
        with tarfile.open(path, "w:gz" if kind == "tar.gz" else "w") as t:
            t.add(tree, arcname=tree.name)
    return path


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "tar", "zip"])
def test_image_tree_in_every_container(tmp_path, isolated_cache, kind):
    tree = write_tree(tmp_path / "tree" / "cifar10-png", per_class=2)
    ds = load_cifar10(str(pack(tree, kind, tmp_path)))
    assert ds.train_x.shape == (20, 32, 32, 3)
    assert ds.train_y.tolist() == np.repeat(np.arange(10), 2).tolist()
    # PNG is lossless: pixels come back exactly, in class then file order
    assert np.array_equal(ds.train_x[0], random_images(2, seed=0)[0])
    assert np.array_equal(ds.test_x[19], random_images(2, seed=9)[1])


def test_cache_is_used_and_keyed_by_source(tmp_path, isolated_cache):
    tree = write_tree(tmp_path / "t", per_class=1)
    first = load_cifar10(str(tree))
    files = list(isolated_cache.glob("*.npz"))
    assert len(files) == 1
    second = load_cifar10(str(tree))
    assert second.checksum == first.checksum and np.array_equal(second.train_x, first.train_x)
    other = write_official(tmp_path / "o")
    assert load_cifar10(str(other)).checksum != first.checksum
    assert len(list(isolated_cache.glob("*.npz"))) == 2


def test_the_cache_is_keyed_on_the_contents_not_the_time_stamps(tmp_path, isolated_cache):
    from PIL import Image

    tree = write_tree(tmp_path / "t", per_class=1)
    image = tree / "train" / "cat" / "0000.png"
    pixels = np.array(Image.open(image))
    Image.fromarray(pixels).save(image, compress_level=0)  # uncompressed: an edited pixel keeps the file's size
    first = load_cifar10(str(tree))
    st = image.stat()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image, compress_level=0)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))  # and its time stamp
    assert image.stat().st_size == st.st_size and image.stat().st_mtime_ns == st.st_mtime_ns
    edited = load_cifar10(str(tree))
    assert edited.checksum != first.checksum  # decoded afresh, not served from the stale cache
    assert edited.train_x[edited.train_y == CLASSES.index("cat")][0, 0, 0].tolist() == pixels[0, 0].tolist()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "altered"])
def test_a_damaged_cache_is_named_and_rebuilt_never_used(tmp_path, isolated_cache, damage):
    tree = write_tree(tmp_path / "t", per_class=2)
    first = load_cifar10(str(tree))
    [cached] = isolated_cache.glob("*.npz")
    raw = bytearray(cached.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "flipped":  # a byte inside the training images: caught by the zip's CRC
        raw[len(raw) // 3] ^= 0xFF
    if damage == "altered":  # a whole, valid file whose pixels are not those its checksum was made from
        with np.load(cached) as z:
            arrays = {k: z[k].copy() for k in z.files}
        arrays["train_x"][0, 0, 0, 0] ^= 0xFF
        np.savez(cached.with_suffix(""), **arrays)
    else:
        cached.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=f"data cache {cached} is damaged"):
        again = load_cifar10(str(tree))
    assert again.checksum == first.checksum and np.array_equal(again.train_x, first.train_x)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten whole: no warning now
        assert load_cifar10(str(tree)).checksum == first.checksum


def test_loads_racing_on_a_cold_cache_all_succeed(tmp_path, isolated_cache, monkeypatch):
    # Every fresh GPU machine starts cold, and a parallel sweep's runs load at once. Here each writer finishes
    # its cache file before any of them renames it into place: the window in which racing writers collide.
    import time
    from concurrent.futures import ThreadPoolExecutor

    tree = write_tree(tmp_path / "t", per_class=2)
    savez = np.savez

    def slow_savez(*args, **kwargs):
        savez(*args, **kwargs)
        time.sleep(0.5)

    monkeypatch.setattr(np, "savez", slow_savez)
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: load_cifar10(str(tree)), range(4)))
    assert len({d.checksum for d in loaded}) == 1
    assert [p.name for p in isolated_cache.iterdir()] == [next(isolated_cache.glob("*.npz")).name]  # no temporary left


def test_data_setting_falls_back_to_environment(tmp_path, isolated_cache, monkeypatch):
    tree = write_tree(tmp_path / "envtree", per_class=1)
    monkeypatch.setenv("RESNET_DATA", str(tree))
    assert load_cifar10("").source == "envtree"


# --- bad input -----------------------------------------------------------------------------------

def test_missing_path(tmp_path, isolated_cache):
    with pytest.raises(DataError, match="not found.*nowhere"):
        load_cifar10(str(tmp_path / "nowhere"))


def test_missing_class(tmp_path, isolated_cache):
    tree = write_tree(tmp_path / "t", classes=CLASSES[:-1])
    with pytest.raises(DataError, match="class.*truck"):
        load_cifar10(str(tree))


def test_wrong_layout(tmp_path, isolated_cache):
    tree = write_tree(tmp_path / "t")
    (tree / "train" / "cat" / "0000.png").rename(tree / "train" / "stray.png")
    with pytest.raises(DataError, match="stray.png.*expected"):
        load_cifar10(str(tree))


def test_unknown_class_folder(tmp_path, isolated_cache):
    tree = write_tree(tmp_path / "t")
    (tree / "train" / "cat").rename(tree / "train" / "kitten")
    with pytest.raises(DataError, match="kitten"):
        load_cifar10(str(tree))


@pytest.mark.parametrize("size, mode", [((28, 28), "RGB"), ((32, 32), "L"), ((32, 32), "RGBA")])
def test_image_not_32x32_rgb(tmp_path, isolated_cache, size, mode):
    from PIL import Image

    tree = write_tree(tmp_path / "t")
    Image.new(mode, size).save(tree / "test" / "dog" / "0000.png")
    with pytest.raises(DataError, match="test/dog/0000.png.*not 32x32 RGB"):
        load_cifar10(str(tree))


def _png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims ``width`` x ``height`` RGB pixels (decoding 9,000 x 9,000
    would take 243 MB; Pillow itself refuses only from about 179 million pixels on)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def test_an_image_claiming_huge_dimensions_is_refused_by_its_header_before_decoding(tmp_path, isolated_cache):
    tree = write_tree(tmp_path / "t")
    (tree / "test" / "dog" / "0000.png").write_bytes(_png_claiming(9_000, 9_000))
    with pytest.raises(DataError, match="test/dog/0000.png is 9000x9000 RGB, not 32x32 RGB"):
        load_cifar10(str(tree))


@pytest.mark.parametrize("kind", ["folder", "tar", "zip"])
def test_an_image_file_far_larger_than_a_32x32_image_is_refused_before_it_is_read(tmp_path, isolated_cache, kind):
    tree = write_tree(tmp_path / "tree" / "cifar10-png")
    (tree / "train" / "cat" / "0000.png").write_bytes(b"\0" * (2**20 + 1))
    path = pack(tree, kind, tmp_path)
    with pytest.raises(DataError, match=r"train/cat/0000.png is 1,048,577 bytes, far more than a 32x32 image"):
        load_cifar10(str(path))


def test_corrupt_image(tmp_path, isolated_cache):
    tree = write_tree(tmp_path / "t")
    (tree / "train" / "ship" / "0000.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="corrupt image.*ship/0000.png"):
        load_cifar10(str(tree))


def test_corrupt_archive(tmp_path, isolated_cache):
    path = tmp_path / "broken.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08 this is not gzip data")
    with pytest.raises(DataError, match="broken.tar.gz"):
        load_cifar10(str(path))


def test_corrupt_official_batch(tmp_path, isolated_cache):
    folder = write_official(tmp_path / "o")
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(str(folder))


def test_counts_other_than_official_need_an_explicit_subset(tmp_path, isolated_cache):
    ds = load_cifar10(str(write_tree(tmp_path / "t", per_class=2)))
    with pytest.raises(DataError, match="20 train images, expected 50000"):
        to_device(ds, "cpu")
    dd = to_device(ds, "cpu", train_subset=20, test_subset=10)
    assert len(dd.train_x) == 20 and len(dd.test_x) == 10
    with pytest.raises(DataError, match="needs 3 images of class airplane, found 2"):
        to_device(ds, "cpu", train_subset=30, test_subset=10)


# --- preprocessing -------------------------------------------------------------------------------

def test_per_pixel_mean_is_subtracted(real_data):
    dd = to_device(real_data, "cpu", train_subset=1000, test_subset=100)
    assert dd.mean.shape == (3, 32, 32)
    assert dd.train_x.mean(0).abs().max() < 1e-5  # the training images average to zero at every pixel
    idx = balanced_subset(real_data.train_y, 1000, "train")
    raw = torch.from_numpy(real_data.train_x[idx]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(dd.mean, raw.mean(0))
    # mean per channel close to CIFAR-10's (../shared/data/README.md)
    assert np.allclose(dd.mean.mean((1, 2)).numpy(), [0.491, 0.481, 0.445], atol=0.02)


def test_balanced_subsets_and_stratified_validation_split(real_data):
    idx = balanced_subset(real_data.train_y, 1000, "train")
    assert np.bincount(real_data.train_y[idx]).tolist() == [100] * 10
    train, val = validation_split(real_data.train_y, 5000, seed=0)
    assert len(train) == 45_000 and len(val) == 5000 and not np.intersect1d(train, val).size
    assert np.bincount(real_data.train_y[val]).tolist() == [500] * 10
    again = validation_split(real_data.train_y, 5000, seed=0)[1]
    assert np.array_equal(val, again)
    dd = to_device(real_data, "cpu", train_subset=1000, test_subset=100, val_size=100)
    assert len(dd.train_x) == 900 and len(dd.val_x) == 100


# --- augmentation --------------------------------------------------------------------------------

def _numbered(B=6, C=3, H=32, W=32):
    # strictly positive, distinct values so every output pixel can be traced back
    return torch.arange(1, B * C * H * W + 1, dtype=torch.float32).reshape(B, C, H, W)


@pytest.mark.parametrize("dx", range(2 * PAD + 1))
@pytest.mark.parametrize("dy", range(2 * PAD + 1))
def test_crop_takes_the_window_of_the_zero_padded_image(dx, dy):
    x = _numbered(B=1)
    out = crop_flip(x, torch.tensor([dx]), torch.tensor([dy]), torch.tensor([False]))
    padded = torch.nn.functional.pad(x, (PAD,) * 4)
    assert torch.equal(out, padded[:, :, dy:dy + 32, dx:dx + 32])
    # at offset 4 the crop is the original image; elsewhere it is shifted, with zeros on the side it came from
    assert torch.equal(out, x) == (dx == dy == 4)
    zero_cols = [c for c in range(32) if not out[..., c].any()]
    zero_rows = [r for r in range(32) if not out[..., r, :].any()]
    assert zero_cols == (list(range(PAD - dx)) if dx < PAD else list(range(32 - (dx - PAD), 32)))
    assert zero_rows == (list(range(PAD - dy)) if dy < PAD else list(range(32 - (dy - PAD), 32)))
    inner = out[..., max(0, PAD - dy):32 - max(0, dy - PAD), max(0, PAD - dx):32 - max(0, dx - PAD)]
    assert torch.equal(inner, x[..., max(0, dy - PAD):32 - max(0, PAD - dy), max(0, dx - PAD):32 - max(0, PAD - dx)])


def test_flip_is_exact_mirror_of_the_crop():
    x = _numbered(B=2)
    dx, dy = torch.tensor([2, 7]), torch.tensor([5, 1])
    plain = crop_flip(x, dx, dy, torch.tensor([False, False]))
    flipped = crop_flip(x, dx, dy, torch.tensor([True, False]))
    assert torch.equal(flipped[0], plain[0].flip(-1))
    assert torch.equal(flipped[1], plain[1])


def _recover_offsets(x, out):
    """(dx, dy, flip) of each output by search (the values of x are distinct and positive)."""
    found = []
    for b in range(len(x)):
        for dy in range(9):
            for dx in range(9):
                for flip in (False, True):
                    cand = crop_flip(x[b:b + 1], torch.tensor([dx]), torch.tensor([dy]), torch.tensor([flip]))
                    if torch.equal(cand[0], out[b]):
                        found.append((dx, dy, flip))
    return found


def test_random_augmentation_is_per_sample_in_range_and_seeded():
    x = _numbered(B=64, C=1)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, g)
    assert out.shape == x.shape
    offsets = _recover_offsets(x, out)
    assert len(offsets) == 64  # each output is exactly one crop (or flipped crop) of its own input
    dxs, dys, flips = zip(*offsets)
    assert min(dxs) >= 0 and max(dxs) <= 8 and min(dys) >= 0 and max(dys) <= 8
    assert len(set(zip(dxs, dys))) > 20  # independent per sample, not one offset for the batch
    assert 10 < sum(flips) < 54
    again = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(1)))


def test_augmentation_offsets_cover_0_to_8_uniformly():
    x = torch.zeros(20_000, 1, 32, 32)
    x[:, :, 0, 0] = 1.0  # one marked pixel: its position in the crop reveals the offset
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1:].T
    dy = PAD - rows
    assert set(dy.tolist()) <= set(range(0, 9))  # marked pixel visible when dy <= 4
    counts = torch.bincount(rows, minlength=5)[:5].float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    assert (cols < 5).sum() > 0 and (cols > 26).sum() > 0  # flipped and unflipped crops both occur


def test_sampler_permutes_each_epoch_and_resumes_exactly():
    g = torch.Generator().manual_seed(0)
    s = BatchSampler(100, 32, g)
    epoch = torch.cat([s.next() for _ in range(3)])
    assert len(set(epoch.tolist())) == 96  # no repeats within an epoch; the remainder of 4 is skipped
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.state_dict().items()}
    ahead = [s.next() for _ in range(5)]
    s2 = BatchSampler(100, 32, torch.Generator())
    s2.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(ahead, [s2.next() for _ in range(5)]))
    with pytest.raises(DataError, match="batch size"):
        BatchSampler(10, 32, g)


def test_batches_are_the_sampler_s_order_cropped_and_flipped_from_one_seed_and_resume_from_their_state(small_data):
    batches = Batches(small_data, 32, seed=3, memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(3)
    sampler = BatchSampler(len(small_data.train_x), 32, g)
    for _ in range(40):  # past the first epoch (31 batches of 1,000 images)
        x, y = next(batches)
        idx = sampler.next()
        assert torch.equal(x, random_crop_flip(small_data.train_x[idx], g)) and torch.equal(y, small_data.train_y[idx])
        assert x.is_contiguous(memory_format=torch.channels_last)
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batches.state_dict().items()}
    ahead = [next(batches) for _ in range(5)]
    again = Batches(small_data, 32, seed=99)
    again.load_state_dict(state)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ahead, again))


def test_an_official_folder_missing_a_batch_is_named(tmp_path, isolated_cache):
    folder = write_official(tmp_path / "cifar-10-batches-py")
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="cifar-10-batches-py: an official CIFAR-10 batches folder without test_batch"):
        load_cifar10(str(folder))


def test_a_real_data_test_without_data_is_skipped_saying_why_or_failed_where_data_is_required(monkeypatch):
    from .conftest import no_data

    monkeypatch.delenv("RESNET_REQUIRE_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no CIFAR-10 source"):
        no_data("no CIFAR-10 source")
    monkeypatch.setenv("RESNET_REQUIRE_DATA", "1")  # CI: a skip would hide that the tests did not run
    try:
        no_data("no CIFAR-10 source")
    except BaseException as e:  # noqa: BLE001 - a skip is not an Exception, and must not pass for a failure here
        raised = e
    assert isinstance(raised, pytest.fail.Exception) and "(RESNET_REQUIRE_DATA=1" in str(raised), repr(raised)
