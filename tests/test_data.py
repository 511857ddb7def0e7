"""Dataset loading: folders, arrays, digits, synthetic; preprocessing; deterministic splits; bad data."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from converter.data.loading import check_shape, fingerprint, load_dataset
from converter.errors import DataError
from converter.recipe.schema import DatasetSpec


def spec(**values) -> DatasetSpec:
    return DatasetSpec.model_validate(values, context={"check_files": False})


@pytest.fixture
def photo_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "ant", "bee"):  # sorted: ant=0, bee=1, cat=2
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "photos" / name / f"{i}.png")
    return tmp_path / "photos"


def test_folder_labels_follow_sorted_class_folders(photo_folder):
    data = load_dataset(spec(source="folder", path=str(photo_folder), preprocess={"resize": [8, 8]}))
    assert data.class_names == ["ant", "bee", "cat"]
    assert data.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.x.shape == (6, 8, 8, 3) and data.x.dtype == np.float32


def test_shorter_side_then_centre_crop(tmp_path):
    (tmp_path / "f" / "a").mkdir(parents=True)
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 36:44] = 255  # a white band in the centre survives the crop
    Image.fromarray(image).save(tmp_path / "f" / "a" / "x.png")
    data = load_dataset(spec(source="folder", path=str(tmp_path / "f"),
                             preprocess={"resize": [10, 10], "resize_mode": "crop", "crop_from": 20, "scale": "1/255"}))
    assert data.x.shape == (1, 10, 10, 3)
    assert data.x[0, 5, 5, 0] == pytest.approx(1.0) and data.x[0, 5, 0, 0] == pytest.approx(0.0, abs=0.05)


def test_scale_mean_std_bgr_and_dtype(tmp_path):
    x = np.zeros((2, 2, 2, 3), dtype=np.float32)
    x[..., 0] = 255.0
    np.save(tmp_path / "x.npy", x)
    data = load_dataset(spec(source="arrays", path=str(tmp_path / "x.npy"),
                             preprocess={"channels": "bgr", "scale": "1/127.5", "mean": 1.0}))
    assert data.x[0, 0, 0].tolist() == pytest.approx([-1.0, -1.0, 1.0])
    as_uint8 = load_dataset(spec(source="arrays", path=str(tmp_path / "x.npy"), preprocess={"dtype": "uint8"}))
    assert as_uint8.x.dtype == np.uint8 and as_uint8.x.max() == 255


def test_npz_with_labels_and_missing_key(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.ones((5, 4), np.float32), y=np.arange(5))
    data = load_dataset(spec(source="arrays", path=str(tmp_path / "d.npz"), x_key="inputs"))
    assert data.x.shape == (5, 4) and data.y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match=r"d.npz: no array 'x'"):
        load_dataset(spec(source="arrays", path=str(tmp_path / "d.npz")))


def test_digits_split_is_deterministic_and_disjoint():
    train = load_dataset(spec(source="digits", split="train", preprocess={"resize": [16, 16]}))
    test = load_dataset(spec(source="digits", split="test"))
    again = load_dataset(spec(source="digits", split="test"))
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert np.array_equal(test.x, again.x)
    assert train.x.shape[1:] == (16, 16, 3)
    assert fingerprint(spec(source="digits", split="test")) != fingerprint(spec(source="digits", split="train"))


def test_empty_folder_names_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no class sub-folders"):
        load_dataset(spec(source="folder", path=str(tmp_path / "empty")))


def test_unreadable_image_names_the_file(photo_folder):
    (photo_folder / "ant" / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: cannot read image"):
        load_dataset(spec(source="folder", path=str(photo_folder), preprocess={"resize": [8, 8]}))


def test_shape_the_model_cannot_take():
    data = load_dataset(spec(source="digits", limit=4))
    with pytest.raises(DataError, match=r"data.eval: samples of shape \[8, 8, 3\] do not fit the model input \[32, 32, 3\]"):
        check_shape(data, [32, 32, 3], "data.eval")


def test_synthetic_warns_and_follows_model_shape():
    with pytest.warns(UserWarning, match="meaningless"):
        data = load_dataset(spec(source="synthetic", count=3), [{"name": "x", "shape": [None, 4, 4, 1], "dtype": "float32"}])
    assert data.x.shape == (3, 4, 4, 1) and data.x.dtype == np.float32 and data.y is None


def test_synthetic_draws_every_input_in_its_dtype():
    inputs = [{"name": "ids", "shape": [None, 6], "dtype": "int32"}, {"name": "image", "shape": [None, 4, 4, 3], "dtype": "float32"},
              {"name": "mask", "shape": [None, 6], "dtype": "bool"}]
    with pytest.warns(UserWarning, match="meaningless"):
        data = load_dataset(spec(source="synthetic", count=5, int_range=[2, 7]), inputs)
    assert sorted(data.x) == ["ids", "image", "mask"] and len(data) == 5
    assert data.x["ids"].dtype == np.int32 and data.x["ids"].min() >= 2 and data.x["ids"].max() < 7
    assert data.x["mask"].dtype == np.bool_ and data.x["image"].shape == (5, 4, 4, 3)


def test_top1_ties_break_like_argmax_whatever_the_order_of_work():
    from converter.metrics import topk_accuracy

    # int8 outputs tie often: a fixed rule (the lower class index, as np.argmax) keeps the figure stable
    output = np.zeros((64, 1000), np.float32)
    output[:, 7] = output[:, 3] = 1.0  # classes 3 and 7 tie on every sample
    labels = np.full(64, 3)
    assert topk_accuracy(output, labels, 1) == 1.0 == float(np.mean(np.argmax(output, axis=1) == labels))
    assert topk_accuracy(output, np.full(64, 7), 1) == 0.0 and topk_accuracy(output, np.full(64, 7), 2) == 1.0
