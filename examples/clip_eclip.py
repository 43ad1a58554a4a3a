"""Grad-ECLIP on a picture and a prompt: which regions make CLIP match the text.

    python examples/clip_eclip.py --prompt "a car with its left indicator on" --out clip.png
    python examples/clip_eclip.py --image photo.jpg --checkpoint ViT-B-32.pt --export clip.onnx

Without --checkpoint the ViT-B/32 has seeded random weights (nothing is downloaded): the
picture shows the machinery, not a trained CLIP's reasoning.  With --export the heatmap comes
from the exported ONNX artifact run by gradvis_runtime (one artifact, any prompt).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gradvis_export as gv  # noqa: E402
from gradvis_export.apps.clip import (  # noqa: E402
    build_clip,
    encode_prompts,
    preprocess_images,
    text_token_relevance,
)


def street_scene(size: int = 224) -> np.ndarray:
    """A drawn test picture: a road, a car, its left indicator lit (uint8 RGB)."""
    import cv2

    img = np.full((size, size, 3), (135, 180, 225), np.uint8)  # sky
    s = size / 224
    cv2.rectangle(img, (0, int(130 * s)), (size, size), (90, 90, 95), -1)  # road
    cv2.rectangle(img, (int(50 * s), int(95 * s)), (int(175 * s), int(160 * s)), (180, 30, 30), -1)
    cv2.rectangle(img, (int(75 * s), int(70 * s)), (int(150 * s), int(100 * s)), (150, 25, 25), -1)
    for cx in (80, 150):
        cv2.circle(img, (int(cx * s), int(162 * s)), int(14 * s), (20, 20, 20), -1)
    cv2.circle(img, (int(58 * s), int(110 * s)), int(7 * s), (255, 170, 0), -1)  # indicator
    return img


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    color = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255
    return (0.5 * image + 0.5 * color).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default="a car with its left indicator on")
    parser.add_argument("--image", type=Path, help="an RGB picture (default: a drawn street)")
    parser.add_argument("--model", default="ViT-B-32", help="an open_clip ViT architecture")
    parser.add_argument("--checkpoint", type=Path, help="local open_clip weights (optional)")
    parser.add_argument("--mode", default="native", choices=("native", "reference"))
    parser.add_argument("--export", type=Path, help="also export to this .onnx and use it")
    parser.add_argument("--out", type=Path, default=Path("clip_eclip.png"))
    args = parser.parse_args(argv)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_clip(args.model, checkpoint=args.checkpoint)
    if args.image is not None:
        from PIL import Image

        picture = np.asarray(Image.open(args.image).convert("RGB"))
    else:
        picture = street_scene()
    x = preprocess_images(model, picture)
    text = encode_prompts(model, [args.prompt])
    explainer = gv.GradECLIP(model, mode=args.mode)
    if args.export is not None:
        import gradvis_runtime

        gv.export(explainer, x, args.export)
        result = gradvis_runtime.load(args.export).run(x.numpy(), text_embedding=text.numpy())
        heatmap, similarity = result["heatmap"][0], float(result["similarity"][0])
    else:
        out = explainer(x, text)
        heatmap, similarity = out.heatmap[0].numpy(), float(out.similarity[0])
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    std, mean = torch.tensor(OPENAI_DATASET_STD), torch.tensor(OPENAI_DATASET_MEAN)
    shown = (x[0].permute(1, 2, 0) * std + mean).clamp(0, 1).numpy()  # the crop the model saw
    shown = (shown * 255).astype(np.uint8)
    words = text_token_relevance(model, args.prompt, explainer.model(x).detach(), mode=args.mode)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.9))
    axes[0].imshow(shown)
    axes[0].set_title("input")
    axes[1].imshow(overlay(shown, heatmap))
    axes[1].set_title(f"Grad-ECLIP ({args.mode}), cos = {similarity:.3f}")
    for ax in axes:
        ax.axis("off")
    weights = "random weights" if args.checkpoint is None else args.checkpoint.name
    relevance = "  ".join(f"{w} {r:.2f}" for w, r in words)
    fig.suptitle(f'"{args.prompt}"  ({args.model}, {weights})\ntext side: {relevance}', fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"similarity {similarity:.4f}; word relevance: {relevance}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
