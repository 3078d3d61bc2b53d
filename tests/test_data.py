import decimal
from unittest import mock

import ml_collections
import numpy as np
import pytest
from PIL import Image

from disal_jax.data import cityscapes, image_folder, long_tail, registry, resize, tfds_source
from disal_jax.data.dataset import Dataset, carve_validation
from disal_jax.experiment import base_config


def _data_config(**kw) -> ml_collections.ConfigDict:
  cfg = base_config().data
  cfg.update(kw)
  return cfg


def test_digits_is_real_offline_and_split_by_class():
  ds = registry.load_dataset(_data_config(name="digits"))
  assert ds.num_train + len(ds.test_labels) == 1797
  assert ds.image_shape == (8, 8, 1) and ds.train_images.dtype == np.uint8
  assert ds.num_classes == 10
  # stratified: every class is in both splits in about the configured proportion
  test_share = np.bincount(ds.test_labels) / (
    np.bincount(ds.test_labels) + np.bincount(ds.train_labels)
  )
  assert np.all(np.abs(test_share - 0.2) < 0.01)
  assert ds.train_images.max() == 255  # scaled from 0..16 grey levels


def test_digits_follows_test_fraction_and_split_seed():
  def rows(ds):  # the images as a set of byte strings (digits holds few duplicates)
    return {image.tobytes() for image in ds.test_images}

  base = registry.load_dataset(_data_config(name="digits"))
  larger = registry.load_dataset(_data_config(name="digits", test_fraction=0.3))
  total = np.bincount(base.train_labels) + np.bincount(base.test_labels)
  assert np.all(np.abs(np.bincount(larger.test_labels) - 0.3 * total) <= 0.5)
  reseeded = registry.load_dataset(_data_config(name="digits", split_seed=1))
  assert len(reseeded.test_labels) == len(base.test_labels)
  assert rows(reseeded) != rows(base)
  assert rows(registry.load_dataset(_data_config(name="digits"))) == rows(base)


def test_long_tail_counts_match_the_published_profiles():
  assert long_tail.long_tail_counts(5000, 10, 100).tolist() == [
    5000,
    2997,
    1796,
    1077,
    645,
    387,
    232,
    139,
    83,
    50,
  ]
  assert long_tail.long_tail_counts(5000, 10, 100).sum() == 12406
  counts = long_tail.long_tail_counts(500, 100, 10)
  assert counts[0] == 500 and counts[-1] == 50 and np.all(np.diff(counts) <= 0)
  assert counts.sum() == 19573


def _profile(n_max: int, num_classes: int, ratio: float) -> list[int]:
  """floor(n_max * (1/ratio)^(c/(C-1))) in 50-digit decimals (exact where it is an integer)."""
  decimal.getcontext().prec = 50
  return [
    int(
      (
        decimal.Decimal(n_max)
        * (1 / decimal.Decimal(ratio)) ** (decimal.Decimal(c) / (num_classes - 1))
      ).to_integral_value(decimal.ROUND_FLOOR)
    )
    for c in range(num_classes)
  ]


def _numbered(n: int, first: int = 0) -> np.ndarray:
  """(n, 2, 2, 1) uint8 images whose first two pixels spell their number, first + row."""
  images = np.zeros((n, 2, 2, 1), np.uint8)
  images[:, 0, 0, 0], images[:, 0, 1, 0] = np.divmod(np.arange(first, first + n), 256)
  return images


def _numbers(images: np.ndarray) -> np.ndarray:
  return images[:, 0, 0, 0].astype(np.int64) * 256 + images[:, 0, 1, 0]


def _first_of_each_class(labels, counts) -> list[int]:
  """The rows a pass in dataset order keeps: each class's first counts[c]."""
  seen, kept = [0] * len(counts), []
  for row, c in enumerate(labels):
    if seen[c] < counts[c]:
      seen[c] += 1
      kept.append(row)
  return kept


def _toy_long_tail_source(sizes=(130, 100, 120, 105, 110), seed=0) -> Dataset:
  """Classes of unequal sizes in shuffled order (the smallest is class 1), numbered rows."""
  labels = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
  np.random.default_rng(seed).shuffle(labels)
  return Dataset(
    "toy",
    _numbered(len(labels)),
    labels,
    _numbered(20, first=1000),
    np.arange(20, dtype=np.int32) % len(sizes),
    tuple("abcde")[: len(sizes)],
  )


def test_make_long_tailed_keeps_the_first_rows_of_each_class_in_the_profiles_counts():
  ds = _toy_long_tail_source()
  expected_counts = _profile(100, 5, 4.0)  # n_max: the smallest class
  assert expected_counts == [100, 70, 50, 35, 25]
  lt = long_tail.make_long_tailed(ds, 4.0)
  assert np.bincount(lt.train_labels).tolist() == expected_counts
  kept = _first_of_each_class(ds.train_labels, expected_counts)
  np.testing.assert_array_equal(_numbers(lt.train_images), kept)  # those rows, in order
  np.testing.assert_array_equal(lt.train_labels, ds.train_labels[kept])
  np.testing.assert_array_equal(lt.test_images, ds.test_images)  # the test set stays
  np.testing.assert_array_equal(lt.test_labels, ds.test_labels)
  assert long_tail.long_tail_counts(100, 10, 10).tolist() == _profile(100, 10, 10.0)
  # (1/32)^(c/5) = 2^-c: 40 x 2^-2 is 10 exactly, 9.999... in floating point
  assert (
    long_tail.long_tail_counts(40, 6, 32).tolist() == _profile(40, 6, 32.0) == [40, 20, 10, 5, 2, 1]
  )


def test_imbalance_ratio_applies_through_the_registry():
  ds = registry.load_dataset(_data_config(name="digits", imbalance_ratio=10.0))
  counts = np.bincount(ds.train_labels)
  assert counts[0] / counts[-1] == pytest.approx(10, rel=0.1)


def test_a_long_tailed_set_keeps_a_balanced_validation_split_out_of_its_pool():
  """Validation is carved before the tail: stratified over the balanced set (as the test
  split is balanced), its rows never in training, and the tail's profile holds on the rest."""
  full = registry.load_dataset(_data_config(name="digits"))
  ds = registry.load_dataset(_data_config(name="digits", imbalance_ratio=10.0, val_fraction=0.2))
  full_counts = np.bincount(full.train_labels, minlength=10)
  np.testing.assert_array_equal(
    np.bincount(ds.val_labels, minlength=10), np.round(0.2 * full_counts).astype(int)
  )
  remaining = full_counts - np.round(0.2 * full_counts).astype(int)
  n_max = remaining.min()
  expected = np.floor(n_max * 0.1 ** (np.arange(10) / 9) + 1e-9).astype(int)
  np.testing.assert_array_equal(np.bincount(ds.train_labels, minlength=10), expected)
  as_bytes = lambda images: {image.tobytes() for image in images}
  assert not as_bytes(ds.val_images) & as_bytes(ds.train_images)


@pytest.mark.slow
def test_image_folder_reads_the_real_cifar10_jpegs(cifar10_archive, cache_dir):
  ds = registry.load_dataset(
    _data_config(name="image_folder", data_dir=cifar10_archive, cache_dir=cache_dir)
  )
  assert ds.num_train == 50_000 and len(ds.test_labels) == 10_000
  assert ds.image_shape == (32, 32, 3)
  assert ds.class_names == (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
  )
  assert np.bincount(ds.train_labels).tolist() == [5000] * 10
  mean, _ = ds.channel_stats()
  np.testing.assert_allclose(mean, [0.491, 0.482, 0.447], atol=0.01)  # known CIFAR-10 means
  with _no_decoding():  # served from the decoded cache
    again = registry.load_dataset(
      _data_config(name="image_folder", data_dir=cifar10_archive, cache_dir=cache_dir)
    )
  np.testing.assert_array_equal(again.train_labels, ds.train_labels)


def _no_decoding():
  return mock.patch.object(
    image_folder, "read_all", side_effect=AssertionError("decoded again, not read from the cache")
  )


@pytest.mark.slow
def test_the_cifar10_ir100_cpu_config_loads_the_papers_tail_and_a_balanced_validation(
  cifar10_archive, cache_dir
):
  from tests.helpers import load_config

  data = load_config("cifar10_ir100_cpu").data
  data.data_dir, data.cache_dir = cifar10_archive, cache_dir
  ds = registry.load_dataset(data)
  assert np.bincount(ds.val_labels).tolist() == [200] * 10
  expected = np.floor(4800 * 0.01 ** (np.arange(10) / 9) + 1e-9).astype(int)
  assert np.bincount(ds.train_labels).tolist() == expected.tolist()
  assert expected[0] / expected[-1] == 100 and len(ds.test_labels) == 2000


def _folder(tmp_path, layout):
  for split, classes in layout.items():
    for name, n in classes.items():
      d = tmp_path / split / name
      d.mkdir(parents=True)
      for i in range(n):
        Image.new("RGB", (6, 6), (i * 10, 0, 0)).save(d / f"{i}.png")
  return tmp_path


def test_image_folder_errors_name_the_path(tmp_path, cache_dir):
  root = _folder(tmp_path / "a", {"train": {"cat": 2, "dog": 0}, "test": {"cat": 1, "dog": 1}})
  with pytest.raises(image_folder.ImageFolderError, match="dog: class folder holds no images"):
    image_folder.load_image_folder(str(root), 0, cache_dir)
  root = _folder(tmp_path / "b", {"train": {"cat": 2, "dog": 1}, "test": {"cat": 1, "eel": 1}})
  with pytest.raises(image_folder.ImageFolderError, match=r"only in train: \['dog'\]"):
    image_folder.load_image_folder(str(root), 0, cache_dir)
  root = _folder(tmp_path / "c", {"train": {"cat": 2}, "test": {"cat": 1}})
  (root / "train" / "cat" / "broken.jpg").write_bytes(b"not an image")
  with pytest.raises(image_folder.ImageFolderError, match="broken.jpg: cannot read image"):
    image_folder.load_image_folder(str(root), 0, cache_dir)
  with pytest.raises(image_folder.ImageFolderError, match="no such folder"):
    image_folder.load_image_folder(str(tmp_path / "missing"), 0, cache_dir)


def test_image_folder_resizes_on_request(tmp_path, cache_dir):
  root = _folder(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
  ds = image_folder.load_image_folder(str(root), 4, cache_dir)
  assert ds.train_images.shape == (5, 4, 4, 3)
  assert ds.train_labels.tolist() == [0, 0, 0, 1, 1]
  with _no_decoding():
    again = image_folder.load_image_folder(str(root), 4, cache_dir)
  np.testing.assert_array_equal(again.train_images, ds.train_images)


def _framed(width, height, border):
  """A green width x height image whose outer `border` pixels (left/right or top/bottom,
  along the longer side) are red."""
  image = np.zeros((height, width, 3), np.uint8)
  image[..., 1] = 255
  if width > height:
    image[:, :border], image[:, width - border :] = (255, 0, 0), (255, 0, 0)
  else:
    image[:border], image[height - border :] = (255, 0, 0), (255, 0, 0)
  return image


@pytest.mark.parametrize("width, height", [(48, 24), (24, 48)])
def test_centre_crop_keeps_the_middle_and_the_aspect(width, height):
  """Shorter side 24 -> 16 (x 2/3), then the central 12 x 12: every red border (12 px along
  the longer side, 8 px after scaling) falls outside the crop; stretching keeps it."""
  image = _framed(width, height, 12)
  cropped = resize.resize_array(image, 12, crop_from=16)
  assert cropped.shape == (12, 12, 3)
  assert (cropped[..., 0] < 5).all() and (cropped[..., 1] > 250).all()  # all green
  stretched = resize.resize_array(image, 12)
  assert stretched.shape == (12, 12, 3) and (stretched[..., 0] > 250).any()
  with pytest.raises(ValueError, match="smaller than the crop"):
    resize.resize_array(image, 12, crop_from=10)


def test_image_folder_centre_crops_through_the_config(tmp_path, cache_dir):
  for split in ("train", "test"):
    (tmp_path / split / "a").mkdir(parents=True)
    Image.fromarray(_framed(48, 24, 12)).save(tmp_path / split / "a" / "0.png")
  cfg = _data_config(
    name="image_folder", data_dir=str(tmp_path), cache_dir=cache_dir, image_size=12, crop_from=16
  )
  assert (registry.load_dataset(cfg).train_images[..., 0] < 5).all()
  cfg.crop_from = 0  # a different cache entry, not the cropped arrays again
  assert (registry.load_dataset(cfg).train_images[..., 0] > 250).any()


def test_unprepared_tfds_dataset_fails_fast_with_the_prepare_command(tmp_path, cache_dir):
  never = AssertionError("tried to download or prepare")
  with (
    mock.patch(
      "tensorflow_datasets.core.dataset_builder.DatasetBuilder.download_and_prepare",
      side_effect=never,
    ),
    pytest.raises(
      tfds_source.DatasetNotPreparedError,
      match="python -m disal_jax.data.prepare --dataset=cifar10",
    ),
  ):
    registry.load_dataset(_data_config(name="cifar10", data_dir=str(tmp_path), cache_dir=cache_dir))


def _mock_tfds(num_examples):
  """tfds' own mock of the data source, with the dataset reported as prepared."""
  import contextlib
  from unittest import mock

  import tensorflow_datasets as tfds

  stack = contextlib.ExitStack()
  stack.enter_context(tfds.testing.mock_data(num_examples=num_examples))
  stack.enter_context(
    mock.patch(
      "tensorflow_datasets.core.dataset_builder.DatasetBuilder.is_prepared", return_value=True
    )
  )
  return stack


def test_tfds_loader_reads_through_the_data_source(tmp_path, cache_dir):
  with _mock_tfds(12):
    ds = tfds_source.load_tfds(
      "cifar10",
      data_dir=str(tmp_path),
      manual_dir="",
      cache_dir=cache_dir,
      image_size=0,
      test_fraction=0.2,
      split_seed=0,
    )
  assert ds.train_images.shape == (12, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert len(ds.test_labels) == 12 and ds.num_classes == 10


def test_tfds_loader_keeps_at_most_max_train_per_class(tmp_path):
  # a cache of its own: the mock's builder reports one data_dir for every test's data
  kwargs = dict(
    data_dir=str(tmp_path),
    manual_dir="",
    cache_dir=str(tmp_path / "cache"),
    image_size=0,
    test_fraction=0.2,
    split_seed=0,
  )
  with _mock_tfds(40):
    whole = tfds_source.load_tfds("cifar10", **kwargs)
    capped = registry.load_dataset(
      _data_config(  # through the config key
        name="cifar10",
        max_train_per_class=2,
        placement="device",
        **{k: v for k, v in kwargs.items() if k != "image_size"},
      )
    )
  assert np.bincount(whole.train_labels).max() > 2  # 40 images over 10 classes
  expected = np.minimum(np.bincount(whole.train_labels, minlength=10), 2)
  assert np.bincount(capped.train_labels, minlength=10).tolist() == expected.tolist()
  assert len(capped.test_labels) == len(whole.test_labels)  # the test split is not capped


def test_caltech101_drops_the_background_class(tmp_path, cache_dir):
  with _mock_tfds(40):
    ds = tfds_source.load_tfds(
      "caltech101",
      data_dir=str(tmp_path),
      manual_dir="",
      cache_dir=cache_dir,
      image_size=16,
      test_fraction=0.1,
      split_seed=0,
    )
  assert ds.num_classes == 101
  assert not any("background" in n.lower() for n in ds.class_names)
  assert ds.image_shape == (16, 16, 3)


def test_cityscapes_maps_label_ids_to_the_19_train_ids_and_downscales():
  ids = np.array([[7, 8, 0, 33], [23, 24, 1, 255], [26, 26, 31, 6], [11, 12, 17, 21]], np.uint8)
  image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
  source = [{"image_left": image, "segmentation_label": ids[..., None]}] * 2
  images, labels = cityscapes.decode_split(source, downscale=1)
  np.testing.assert_array_equal(
    labels[0], [[0, 1, 255, 18], [10, 11, 255, 255], [13, 13, 16, 255], [2, 3, 5, 8]]
  )
  assert images.shape == (2, 4, 4, 3) and labels.dtype == np.uint8
  small_images, small_labels = cityscapes.decode_split(source, downscale=2)
  assert small_images.shape == (2, 2, 2, 3) and small_labels.shape == (2, 2, 2)
  assert set(np.unique(small_labels)) <= set(np.unique(labels))  # nearest: no new labels
  assert cityscapes.CLASS_NAMES[13] == "car" and len(cityscapes.CLASS_NAMES) == 19


def test_cityscapes_reads_through_tfds_as_a_segmentation_dataset(tmp_path, cache_dir):
  with _mock_tfds(2):
    ds = registry.load_dataset(
      _data_config(name="cityscapes", data_dir=str(tmp_path), cache_dir=cache_dir, downscale=16)
    )
  assert ds.is_segmentation and ds.num_classes == 19
  assert ds.train_images.shape == (2, 64, 128, 3) and ds.train_labels.shape == (2, 64, 128)
  assert set(np.unique(ds.train_labels)) <= set(range(19)) | {255}
  with pytest.raises(
    tfds_source.DatasetNotPreparedError, match=r"gtFine_trainvaltest.zip(.|\n)*--dataset=cityscapes"
  ):
    registry.load_dataset(
      _data_config(name="cityscapes", data_dir=str(tmp_path / "empty"), cache_dir=cache_dir)
    )


def test_imagenet100_class_list_has_100_distinct_synsets():
  classes = tfds_source.class_list("imagenet100_classes.txt")
  assert len(classes) == 100 == len(set(classes))
  assert all(c.startswith("n") and len(c) == 9 for c in classes)


def test_validation_split_is_stratified_disjoint_and_fixed():
  whole = registry.load_dataset(_data_config(name="digits"))
  dataset = registry.load_dataset(_data_config(name="digits", val_fraction=0.2))
  again = registry.load_dataset(_data_config(name="digits", val_fraction=0.2))
  assert dataset.num_train + len(dataset.val_labels) == whole.num_train
  np.testing.assert_array_equal(dataset.val_images, again.val_images)  # fixed by split_seed
  # stratified: every class keeps about 20% of its images on the validation side
  val_counts = np.bincount(dataset.val_labels, minlength=10)
  all_counts = np.bincount(whole.train_labels, minlength=10)
  assert np.all(np.abs(val_counts - 0.2 * all_counts) <= 1)
  np.testing.assert_array_equal(dataset.test_labels, whole.test_labels)  # test set untouched
  # disjoint and complete, on images that are all distinct (their first pixel is their row)
  images = np.zeros((50, 2, 2, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(50)
  toy = Dataset("toy", images, np.arange(50) % 5, images[:5], np.arange(5), tuple("abcde"))
  split = carve_validation(toy, 0.2, 0)
  train_ids, val_ids = split.train_images[:, 0, 0, 0], split.val_images[:, 0, 0, 0]
  assert len(val_ids) == 10 and not set(train_ids) & set(val_ids)
  assert sorted([*train_ids, *val_ids]) == list(range(50))
  assert (np.bincount(split.val_labels) == 2).all()


@pytest.fixture
def toy_source(monkeypatch):
  """A dataset 'toy' in the registry: _toy_long_tail_source, whatever the config asks."""
  monkeypatch.setitem(registry._LOADERS, "toy", lambda cfg: _toy_long_tail_source())
  return _toy_long_tail_source()


def _toy_config(**kw):
  return _data_config(name="toy", placement="device", **kw)  # no row store: the arrays


def test_validation_then_long_tail_then_max_train_through_the_registry(toy_source):
  labels = toy_source.train_labels
  long_tailed = registry.load_dataset(_toy_config(imbalance_ratio=4.0))
  np.testing.assert_array_equal(
    _numbers(long_tailed.train_images), _first_of_each_class(labels, _profile(100, 5, 4.0))
  )
  assert long_tailed.val_images is None

  balanced = registry.load_dataset(_toy_config(val_fraction=0.24))
  val = _numbers(balanced.val_images)
  # stratified over the whole (balanced) training split: 24% of 130, 100, 120, 105, 110,
  # rounded (31.2 -> 31, 28.8 -> 29; no ties)
  assert np.bincount(balanced.val_labels, minlength=5).tolist() == [31, 24, 29, 25, 26]
  np.testing.assert_array_equal(balanced.val_labels, labels[val])
  carved = registry.load_dataset(_toy_config(imbalance_ratio=4.0, val_fraction=0.24))
  np.testing.assert_array_equal(_numbers(carved.val_images), val)  # carved before the tail
  # the tail then keeps the first rows of each class among the rest (99, 76, 91, 80, 84)
  rest = np.setdiff1d(np.arange(len(labels)), val)
  counts = _profile(76, 5, 4.0)
  train = rest[_first_of_each_class(labels[rest], counts)]
  np.testing.assert_array_equal(_numbers(carved.train_images), train)  # in order
  np.testing.assert_array_equal(carved.train_labels, labels[train])
  assert np.bincount(carved.train_labels).tolist() == counts and not set(train) & set(val)
  np.testing.assert_array_equal(carved.test_images, toy_source.test_images)
  other_seed = registry.load_dataset(
    _toy_config(imbalance_ratio=4.0, val_fraction=0.24, split_seed=1)
  )
  assert not np.array_equal(_numbers(other_seed.val_images), val)

  cut = registry.load_dataset(
    _toy_config(imbalance_ratio=4.0, val_fraction=0.24, max_train=150, max_test=7)
  )
  # the cut comes last: the same validation rows, none of them in the pool
  np.testing.assert_array_equal(_numbers(cut.val_images), val)
  cut_train = _numbers(cut.train_images)
  assert len(cut_train) == 150 and (np.diff(cut_train) > 0).all()
  assert set(cut_train) <= set(train)
  assert len(cut.test_labels) == 7 and set(_numbers(cut.test_images)) <= set(range(1000, 1020))
  # a uniform draw over the long-tailed training rows, not its first 150
  assert cut_train.max() > train[149]
  again = registry.load_dataset(
    _toy_config(imbalance_ratio=4.0, val_fraction=0.24, max_train=150, max_test=7)
  )
  np.testing.assert_array_equal(_numbers(again.train_images), cut_train)
