"""A user's own images: a folder of PNGs of mixed sizes, resized, grey or RGB, flat or not,
with or without labels, through DataLoader workers."""

import pytest
import torch
from torch.utils.data import DataLoader

from pyro_gen import data


@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for i in range(12):
        h, w = 10 + 3 * i, 30 - i  # every image another size, portrait and landscape
        pixels = torch.randint(0, 256, (h, w, 3), generator=rng, dtype=torch.uint8).numpy()
        path = tmp_path / "images" / f"class_{i % 2}" / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(path)
    return tmp_path / "images"


def test_grey_flat_images_alone(folder):
    ds = data.image_folder(folder, size=8)
    assert len(ds) == 12 and ds.image_shape == (1, 8, 8) and ds.dim == 64
    x = ds[0]
    assert torch.is_tensor(x) and x.shape == (64,) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_rgb_images_labels_and_workers(folder):
    rgb = data.image_folder(folder, size=8, channels=3, flatten=False)
    assert rgb[5].shape == (3, 8, 8) and rgb.image_shape == (3, 8, 8)
    labelled = data.image_folder(folder, size=(6, 4), labels=True, transform=data.DynamicBinarize())
    x, y = labelled[11]  # sorted by class: the last is class_1
    assert x.shape == (24,) and y == 1 and set(x.unique().tolist()) <= {0.0, 1.0}
    assert {labelled[i][1] for i in range(12)} == {0, 1} and labelled.classes == ["class_0", "class_1"]
    batches = list(DataLoader(data.image_folder(folder, size=8), batch_size=5, num_workers=2))
    assert [tuple(b.shape) for b in batches] == [(5, 64), (5, 64), (2, 64)]


def test_images_without_resizing_must_share_a_size(folder, tmp_path):
    ds = data.image_folder(folder)
    assert ds.image_shape == (1, 10, 30) and ds[0].shape == (300,)
    with pytest.raises(ValueError, match=r"class_0.img10.png: image of 20x40 pixels, but the folder's first image has 30x10"):
        ds[1]
    with pytest.raises(data.DataNotFoundError, match=str(tmp_path / "nowhere")):
        data.image_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="channels must be 1 .grey. or 3 .RGB., got 2"):
        data.image_folder(folder, channels=2)
