"""The contract with the CAM engine: stage names, the main head, ReCAM's second head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from camflow.cams import compute
from camflow.models import build


def test_cam_engine_finds_the_main_head_and_the_recam_head() -> None:
    torch.manual_seed(0)
    model = build("resnet18", 4, head="recam").eval()
    with torch.no_grad():  # make the two heads differ clearly
        model.recam_head.weight.normal_()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, maps = model(x, return_stages=True)
        expected = F.relu(F.conv2d(maps["stage5"], model.head.classifier.weight))
        expected_re = F.relu(F.conv2d(maps["stage5"], model.recam_head.weight))
    cams = compute(model, x, "cam", ["stage5"], [0, 1, 2, 3])
    recams = compute(model, x, "recam", ["stage5"], [0, 1, 2, 3], head=model.recam_head)
    torch.testing.assert_close(cams, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(recams, expected_re, rtol=1e-4, atol=1e-5)
    assert "stage4" in dict(model.named_modules())
