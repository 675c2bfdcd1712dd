from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from camflow.outputs import SEEDS_SCHEMA, dequantize_seed, quantize_seed, seed_rows


def test_quantize_stride_one_is_exact_to_half_a_level():
    cams = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(0))
    q, h, w = quantize_seed(cams, 1)
    assert (h, w) == (5, 7) and q.dtype.name == "uint8"
    assert (torch.from_numpy(q).float() / 255 - cams).abs().max() <= 0.5 / 255 + 1e-7


def test_stride_averages_blocks_and_rounds_up_the_size():
    cams = torch.zeros(1, 5, 4)
    cams[0, :4, :2] = 1.0
    q, h, w = quantize_seed(cams, 2)
    assert (h, w) == (3, 2)
    assert q[0, 0, 0] == 255 and q[0, 0, 1] == 0


def test_seed_rows_one_row_per_class_and_round_trip():
    cams = torch.rand(3, 16, 12, generator=torch.Generator().manual_seed(1))
    seeds = quantize_seed(cams, 1)[0]
    table = pa.Table.from_pylist(
        seed_rows("img1", [4, 0, 7], seeds, size=(16, 12), stride=1, scales=(1.0, 0.5)),
        schema=SEEDS_SCHEMA)
    assert table.schema == SEEDS_SCHEMA and table.num_rows == 3
    assert table["class_id"].to_pylist() == [4, 0, 7]
    row = table.slice(1, 1).to_pylist()[0]
    assert torch.allclose(dequantize_seed(row), cams[1], atol=0.5 / 255 + 1e-6)
    assert pa.Table.from_pylist(table.to_pylist(), schema=SEEDS_SCHEMA).equals(table)


def test_bad_seed_input_is_named():
    with pytest.raises(ValueError, match="img9"):
        seed_rows("img9", [1, 2], np.zeros((3, 4, 4), np.uint8), size=(4, 4), stride=1,
                  scales=(1.0,))
    with pytest.raises(ValueError, match="uint8"):
        seed_rows("img9", [1], np.zeros((1, 4, 4), np.float32), size=(4, 4), stride=1,
                  scales=(1.0,))
    with pytest.raises(ValueError, match="stride"):
        quantize_seed(torch.rand(1, 4, 4), 0)


def test_masks_table_is_an_image_dataset_for_hugging_face_and_plain_for_the_rest(tmp_path):
    import duckdb
    import numpy as np
    import pyarrow.parquet as pq
    from datasets import load_dataset

    from camflow.outputs import MASKS_SCHEMA, png_cell
    from camflow.postprocess import decode_label_png, encode_label_png

    labels = np.zeros((6, 9), np.uint8)
    labels[1:4, 2:7] = 3
    labels[5, :] = 255
    rows = [{"image_id": f"im{i}", "height": 6, "width": 9,
             "mask_png": png_cell(encode_label_png(labels), f"im{i}"), "bg_threshold": 0.25,
             "crf": False} for i in range(2)]
    path = tmp_path / "masks.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=MASKS_SCHEMA), path)

    ds = load_dataset("parquet", data_files=str(path), split="train",
                      cache_dir=str(tmp_path / "hf"))
    assert type(ds.features["mask_png"]).__name__ == "Image"
    image = ds[0]["mask_png"]  # a PIL image, palette mode as written
    assert image.size == (9, 6) and image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), labels)

    table = pq.read_table(path)
    assert decode_label_png(table["mask_png"][1].as_py()["bytes"]).tolist() == labels.tolist()
    frame = table.to_pandas()
    assert frame["mask_png"][0]["path"] == "im0.png"
    found = duckdb.sql(f"SELECT image_id, mask_png.path AS p FROM '{path}' ORDER BY 1").fetchall()
    assert found == [("im0", "im0.png"), ("im1", "im1.png")]
