"""Explain a segmentation model, a dense detector and an embedding model; export one of each.

    python examples/targets.py --out /tmp/gradvis-targets

Random-init models (nothing is downloaded), so the maps show the machinery, not knowledge.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

import gradvis_export as gv
import gradvis_runtime


class GridDetector(nn.Module):
    """A dense detector head before NMS: one box and 3 class scores per cell of an 8x8 grid."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 4, 1), nn.ReLU()
        )
        self.boxes = nn.Conv2d(32, 4, 1)
        self.scores = nn.Conv2d(32, 3, 1)
        centers = (torch.arange(8.0) + 0.5) * 8
        self.register_buffer("grid", torch.stack(torch.meshgrid(centers, centers, indexing="xy")))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        d = self.boxes(f)
        center = self.grid + 8 * d[:, :2]
        half = 8 * torch.exp(d[:, 2:].clamp(max=3))
        boxes = torch.cat([center - half, center + half], dim=1).flatten(2).transpose(1, 2)
        return boxes, self.scores(f).flatten(2).transpose(1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gradvis-targets"))
    out_dir = parser.parse_args().out
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=4
        ).eval()
    road = torch.zeros(2, 64, 64)
    road[:, 40:] = 1  # the lower third of each image
    cam = gv.GradCAM(seg, "backbone.16", target=gv.SegmentationTarget())
    out = cam(x, torch.tensor([1, 3]), mask=road)
    print("segmentation:", out._fields, tuple(out.heatmap.shape))

    detector = GridDetector().eval()
    det_cam = gv.EigenGradCAM(detector, "backbone.3", target=gv.DetectionTarget())
    with torch.no_grad():
        box = detector(x)[0][:, 27]  # one predicted box per image
    out = det_cam(x, box=box, label=torch.tensor([2, -1]))
    print("detection:", out._fields, tuple(out.heatmap.shape))
    path = gv.export(det_cam, x, out_dir / "detection_eigengradcam.onnx")
    rt = gradvis_runtime.load(path)
    result = rt.run(x.numpy(), box=box.numpy())  # label left out: -1, each box's best class
    print(f"  {path.name}: inputs {rt.input_names}, heatmap {result['heatmap'].shape}")

    embedder = torchvision.models.resnet18(num_classes=32).eval()
    gallery = torch.randn(2, 32)
    reid = gv.AblationCAM(embedder, "layer4", target=gv.EmbeddingSimilarityTarget())
    out = reid(x, gallery)
    print("embedding:", out._fields, tuple(out.heatmap.shape))
    assert np.isfinite(result["heatmap"]).all()


if __name__ == "__main__":
    main()
