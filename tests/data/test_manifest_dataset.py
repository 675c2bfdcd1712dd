"""ManifestDataset: decoding, normalisation, multi-hot labels, custom transforms, URIs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from camflow.data.dataset import MEAN, STD, ManifestDataset, denormalize, normalize
from camflow.data.images import BadImageError
from camflow.data.manifest import make_manifest, write_manifest


@pytest.fixture()
def manifest(tmp_path, write_image):
    rows = []
    for i, (mode, labels) in enumerate((("RGB", [0, 2]), ("L", [1]), ("RGBA", [3]))):
        path = write_image(tmp_path / f"im{i}.png", size=(40, 30), mode=mode, seed=i)
        rows.append(
            {"image_id": f"im{i}", "uri": str(path), "split": "train", "labels": labels,
             "width": 40, "height": 30}
        )  # fmt: skip
    return make_manifest(rows)


def test_items(manifest, tmp_path) -> None:
    dataset = ManifestDataset(manifest, 4, size=32)
    assert len(dataset) == 3
    item = dataset[0]
    assert set(item) == {"image", "labels", "index", "image_id"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["labels"].tolist() == [1.0, 0.0, 1.0, 0.0] and item["labels"].dtype == torch.float32
    assert (item["index"], item["image_id"]) == (0, "im0")
    # ImageNet normalisation of the resized pixels (antialiased bilinear, in float, as
    # camflow.data.transforms.ImagePrep does), undone exactly by denormalize.
    pixels = np.asarray(Image.open(tmp_path / "im0.png").convert("RGB"), np.float32) / 255.0
    expected = F.interpolate(torch.from_numpy(pixels).permute(2, 0, 1)[None], size=(32, 32),
                             mode="bilinear", align_corners=False, antialias=True)[0]
    expected = expected.permute(1, 2, 0).numpy()
    restored = denormalize(item["image"]).permute(1, 2, 0).numpy()
    assert np.abs(restored - expected).max() < 1e-5
    assert dataset[-1]["image_id"] == "im2"
    with pytest.raises(IndexError):
        dataset[3]


def test_rectangular_size_and_batches(manifest) -> None:
    loader = DataLoader(ManifestDataset(manifest, 4, size=(24, 40)), batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 24, 40) and batch["labels"].shape == (3, 4)
    assert batch["image_id"] == ["im0", "im1", "im2"]


def test_custom_transform_receives_the_rgb_image(manifest) -> None:
    seen = []

    def transform(image: Image.Image) -> torch.Tensor:
        seen.append((image.mode, image.size))
        return torch.zeros(3, 8, 8)

    item = ManifestDataset(manifest, 4, transform=transform)[1]
    assert seen == [("RGB", (40, 30))] and item["image"].shape == (3, 8, 8)


def test_reads_a_parquet_manifest_and_relative_uris(manifest, tmp_path) -> None:
    relative = manifest.set_column(
        manifest.schema.get_field_index("uri"), "uri", [[f"im{i}.png" for i in range(3)]]
    )
    write_manifest(relative, str(tmp_path / "m.parquet"))
    dataset = ManifestDataset(str(tmp_path / "m.parquet"), 4, size=16, root=tmp_path)
    assert dataset[2]["image"].shape == (3, 16, 16)


def test_bad_image_names_the_record(manifest, tmp_path) -> None:
    (tmp_path / "im1.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="im1"):
        ManifestDataset(manifest, 4)[1]


def test_label_out_of_range_names_the_record(manifest) -> None:
    with pytest.raises(ValueError, match="im0.*out of range"):
        ManifestDataset(manifest, 2)[0]


def test_normalize_constants() -> None:
    ones = torch.ones(2, 3, 4, 4)
    out = normalize(ones)
    assert torch.allclose(out[0, :, 0, 0], (1 - torch.tensor(MEAN)) / torch.tensor(STD))
    assert torch.allclose(denormalize(out), ones)
    with pytest.raises(ValueError, match="3, H, W"):
        normalize(torch.ones(4, 4))


@pytest.mark.slow
def test_s3_manifest_and_images(manifest, tmp_path, s3_bucket) -> None:
    from camflow import storage

    rows = manifest.to_pylist()
    for row in rows:
        uri = f"s3://{s3_bucket}/images/{row['image_id']}.png"
        with open(row["uri"], "rb") as f:
            storage.write_bytes(f.read(), uri)
        row["uri"] = uri
    write_manifest(make_manifest(rows), f"s3://{s3_bucket}/manifest.parquet")
    dataset = ManifestDataset(f"s3://{s3_bucket}/manifest.parquet", 4, size=16)
    assert [dataset[i]["image_id"] for i in range(3)] == ["im0", "im1", "im2"]
