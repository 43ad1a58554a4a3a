"""Grad-ECLIP vs independent eager implementations of the paper's formulas, exports, errors.

Two references, written here without the code under test:
* native mode: the model's own forward (`encode_image`) with hooks on the last block's
  attention; the gradient w.r.t. the attention output before `out_proj` is W_out^T times the
  gradient w.r.t. the module's output.
* reference mode: the last block recomputed from its parameters with one full-width head.
The text side is checked the same way (hooks on `encode_text`).  Artifacts (ONNX, TorchScript)
are run at batches 1 and 3 (traced at 2) with two prompts; the video path and the CLI's
`--model clip-...` run on small generated videos.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import gradvis_export as gv
from gradvis_export.apps.clip import (
    TINY_CLIP_CONFIG,
    build_clip,
    encode_prompts,
    text_token_relevance,
    tokenize,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

PROMPTS = ["a car with its left indicator on", "a dog on a sofa"]


@pytest.fixture(scope="module")
def tiny():
    return build_clip(TINY_CLIP_CONFIG, seed=0)


@pytest.fixture(scope="module")
def vit_b32():
    return build_clip("ViT-B-32", seed=0)


def image(model, batch: int, seed: int) -> torch.Tensor:
    size = model.visual.image_size
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, *size), generator=gen)


def min_max(t: torch.Tensor) -> torch.Tensor:
    flat = t.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    shape = (-1,) + (1,) * (t.dim() - 1)
    return (t - low.view(shape)) / (high - low).clamp_min(1e-30).view(shape)


def finish(patch_map: torch.Tensor, model) -> torch.Tensor:
    """(B, N) patch relevance -> min-max on the grid -> bilinear to the image."""
    gh, gw = model.visual.grid_size
    grid = min_max(patch_map.reshape(-1, gh, gw))
    return F.interpolate(
        grid[:, None], size=model.visual.image_size, mode="bilinear", align_corners=False
    )[:, 0]


def eclip_native(model, x, text, project_qk=False):
    """Hooks on the real forward: q,k,v from the attention's input, g through out_proj."""
    attn = model.visual.transformer.resblocks[-1].attn
    seen = {}
    pre = attn.register_forward_pre_hook(lambda m, args: seen.__setitem__("h", args[0]))
    post = attn.register_forward_hook(lambda m, args, out: seen.__setitem__("y", out[0]))
    try:
        with torch.enable_grad():
            f = model.encode_image(x)
            s = F.cosine_similarity(f, text, dim=1)
            (dy,) = torch.autograd.grad(s.sum(), seen["y"])
    finally:
        pre.remove()
        post.remove()
    g = dy[:, 0] @ attn.out_proj.weight  # d s / d o_cls, (B, D)
    h = seen["h"].detach()
    q, k, v = (h @ attn.in_proj_weight.T + attn.in_proj_bias).detach().chunk(3, dim=-1)
    q0, keys = q[:, :1], k[:, 1:]
    if project_qk:
        q0, keys = attn.out_proj(q0).detach(), attn.out_proj(keys).detach()
    r = F.cosine_similarity(q0, keys, dim=-1)
    w = min_max(r)
    heat = torch.relu(w * torch.einsum("bnc,bc->bn", v[:, 1:], g.detach()))
    return finish(heat, model), s.detach()


def eclip_reference(model, x, text):
    """The authors' recomputation: one head over the full width in the last block."""
    vis = model.visual
    blocks = vis.transformer.resblocks
    with torch.no_grad():
        t = vis.conv1(x).flatten(2).transpose(1, 2)
        cls = vis.class_embedding.expand(x.shape[0], 1, -1)
        t = vis.ln_pre(torch.cat([cls, t], dim=1) + vis.positional_embedding)
        for block in blocks[:-1]:
            t = block(t)
    last = blocks[-1]
    d = t.shape[-1]
    ln = last.ln_1
    h = F.layer_norm(t, (d,), ln.weight, ln.bias, ln.eps)
    q, k, v = F.linear(h, last.attn.in_proj_weight, last.attn.in_proj_bias).detach().chunk(3, -1)
    attn = torch.softmax(q[:, 0:1] @ k.transpose(1, 2) / math.sqrt(d), dim=-1)
    o = (attn @ v)[:, 0].requires_grad_(True)  # (B, D), the class token
    with torch.enable_grad():
        y = t[:, 0] + F.linear(o, last.attn.out_proj.weight, last.attn.out_proj.bias)
        ln2 = last.ln_2
        hidden = F.gelu(
            F.linear(
                F.layer_norm(y, (d,), ln2.weight, ln2.bias, ln2.eps),
                last.mlp.c_fc.weight,
                last.mlp.c_fc.bias,
            )
        )
        y = y + F.linear(hidden, last.mlp.c_proj.weight, last.mlp.c_proj.bias)
        lp = vis.ln_post
        f = F.layer_norm(y, (d,), lp.weight, lp.bias, lp.eps) @ vis.proj
        s = F.cosine_similarity(f, text, dim=1)
        (g,) = torch.autograd.grad(s.sum(), o)
    w = min_max(F.cosine_similarity(q[:, :1], k[:, 1:], dim=-1))
    heat = torch.relu(w * torch.einsum("bnc,bc->bn", v[:, 1:], g))
    return finish(heat, model)


def assert_maps_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-4) -> None:
    assert got.shape == want.shape
    assert float(want.amax()) > 0.5, "the reference map is empty: the test would prove nothing"
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("arch", ["tiny", "vit_b32"])
@pytest.mark.parametrize("mode", ["native", "reference"])
def test_matches_paper_formulas(arch, mode, request):
    model = request.getfixturevalue(arch)
    x = image(model, 2, seed=1)
    text = encode_prompts(model, PROMPTS)
    out = gv.GradECLIP(model, mode=mode)(x, text)
    want_native, similarity = eclip_native(model, x, text)
    want = want_native if mode == "native" else eclip_reference(model, x, text)
    assert_maps_close(out.heatmap, want)
    # the similarity returned is the model's own, in both modes
    # (the model's own SDPA kernel vs the math path: rounding-level differences)
    torch.testing.assert_close(out.similarity, similarity, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        out.image_embedding, model.encode_image(x).detach(), rtol=1e-4, atol=1e-5
    )


def test_modes_differ_and_projected_qk(tiny):
    x, text = image(tiny, 2, seed=2), encode_prompts(tiny, PROMPTS)
    native = gv.GradECLIP(tiny, mode="native")(x, text).heatmap
    reference = gv.GradECLIP(tiny, mode="reference")(x, text).heatmap
    assert not torch.allclose(native, reference, atol=1e-3)
    projected = gv.GradECLIP(tiny, mode="native", project_qk=True)(x, text).heatmap
    assert_maps_close(projected, eclip_native(tiny, x, text, project_qk=True)[0])


def test_map_changes_with_prompt(tiny):
    x = image(tiny, 1, seed=3).expand(2, -1, -1, -1)
    out = gv.GradECLIP(tiny)(x, encode_prompts(tiny, PROMPTS))
    assert not torch.allclose(out.heatmap[0], out.heatmap[1], atol=1e-3)


def run_artifact(path, fmt, x, text):
    if fmt == "onnx":
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        assert names == ["input", "text_embedding"]
        return session.run(None, {"input": x.numpy(), "text_embedding": text.numpy()})
    module = torch.jit.load(str(path))
    with torch.inference_mode():
        return [o.numpy() for o in module(x, text)]


@pytest.mark.parametrize(
    "fmt,mode",
    [
        ("onnx", "native"),
        ("onnx", "reference"),
        ("torchscript", "native"),
        ("torchscript", "reference"),
    ],
)
def test_export_matches_eager(tiny, tmp_path, fmt, mode):
    explainer = gv.GradECLIP(tiny, mode=mode)
    path = tmp_path / ("eclip.onnx" if fmt == "onnx" else "eclip.pt")
    gv.export(explainer, image(tiny, 2, seed=4), path)
    maps = {}
    for batch in (1, 3):
        x = image(tiny, batch, seed=10 + batch)
        for p, prompt in enumerate(PROMPTS):
            text = encode_prompts(tiny, [prompt] * batch)
            want = explainer(x, text)
            got = run_artifact(path, fmt, x, text)
            for name, g, w in zip(want._fields, got, want):
                np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
            maps[batch, p] = got[2]
        assert not np.allclose(maps[batch, 0], maps[batch, 1], atol=1e-3)
    if fmt == "onnx" and mode == "native":  # the video path on the artifact
        from gradvis_export.apps.clip_video import artifact_explain, explain_video_clip

        write_video(tmp_path / "in.mp4", frames=3)
        kwargs = {"frames": "all", "batch": 2}
        got = explain_video_clip(
            tmp_path / "in.mp4", tiny, PROMPTS[1], None,
            explain=artifact_explain(path, threads=1), **kwargs,
        )  # fmt: skip
        want = explain_video_clip(tmp_path / "in.mp4", tiny, PROMPTS[1], None, **kwargs)
        np.testing.assert_allclose(got["similarity"], want["similarity"], rtol=1e-4, atol=1e-5)


def test_errors(tiny):
    explainer = gv.GradECLIP(tiny)
    x = image(tiny, 2, seed=5)
    with pytest.raises(gv.InputError, match="text_embedding .* must be \\(B, 32\\)"):
        explainer(x, torch.randn(2, 16))
    with pytest.raises(gv.InputError, match="text_embedding"):
        explainer(x)
    with pytest.raises(gv.InputError, match="takes \\(B, 3, 64, 64\\)"):
        explainer(torch.randn(2, 3, 32, 32), torch.randn(2, 32))
    with pytest.raises(gv.InputError, match="mode must be"):
        gv.GradECLIP(tiny, mode="heads")
    resnet_clip = build_clip(
        {**TINY_CLIP_CONFIG, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8}}
    )
    with pytest.raises(gv.InputError, match="needs a ViT image tower"):
        gv.GradECLIP(resnet_clip)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_clip("ViT-B-32", checkpoint="/nonexistent/weights.pt")
    with pytest.raises(gv.InputError, match="unknown open_clip architecture"):
        build_clip("ViT-Q-99")


def test_checkpoint_roundtrip(tiny, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    loaded = build_clip(TINY_CLIP_CONFIG, checkpoint=path, seed=123)
    x = image(tiny, 1, seed=6)
    torch.testing.assert_close(loaded.encode_image(x), tiny.encode_image(x))


def text_relevance_by_hooks(model, prompt, image_embedding, layers):
    """Independent text side: hooks on the real encode_text, g through each out_proj."""
    tokens = tokenize(model, prompt)
    eos = int(tokens.argmax())
    blocks = list(model.transformer.resblocks)[-layers:]
    seen = []
    handles = []
    for block in blocks:
        entry = {}
        seen.append(entry)
        handles.append(
            block.attn.register_forward_pre_hook(lambda m, a, e=entry: e.__setitem__("h", a[0]))
        )
        handles.append(
            block.attn.register_forward_hook(lambda m, a, o, e=entry: e.__setitem__("y", o[0]))
        )
    try:
        with torch.enable_grad():
            s = F.cosine_similarity(model.encode_text(tokens), image_embedding, dim=1).sum()
            dys = torch.autograd.grad(s, [e["y"] for e in seen])
    finally:
        for handle in handles:
            handle.remove()
    total = torch.zeros(eos + 1)
    for block, entry, dy in zip(blocks, seen, dys):
        attn = block.attn
        g = (dy[0, eos] @ attn.out_proj.weight).detach()
        q, k, v = (entry["h"][0] @ attn.in_proj_weight.T + attn.in_proj_bias).detach().chunk(3, -1)
        r = F.cosine_similarity(q[eos][None], k[: eos + 1], dim=-1)
        total += (r - r.min()) / (r.max() - r.min()) * (v[: eos + 1] @ g)
    rel = torch.relu(total)[1:eos]
    return rel / rel.sum()


def test_text_token_relevance(tiny):
    x = image(tiny, 1, seed=7)
    emb = tiny.encode_image(x).detach()
    got = text_token_relevance(tiny, PROMPTS[0], emb, layers=2)
    assert [w for w, _ in got] == ["a", "car", "with", "its", "left", "indicator", "on"]
    want = text_relevance_by_hooks(tiny, PROMPTS[0], emb, layers=2)
    np.testing.assert_allclose([r for _, r in got], want.numpy(), rtol=1e-4, atol=1e-6)
    assert abs(sum(r for _, r in got) - 1) < 1e-5
    reference = text_token_relevance(tiny, PROMPTS[0], emb, layers=2, mode="reference")
    assert [w for w, _ in reference] == [w for w, _ in got]
    assert abs(sum(r for _, r in reference) - 1) < 1e-5
    with pytest.raises(gv.InputError, match="dimensions"):
        text_token_relevance(tiny, PROMPTS[0], torch.randn(1, 7))


def write_video(path, frames: int = 6, height: int = 50, width: int = 72) -> list[np.ndarray]:
    from gradvis_export.apps.video.decode import read_frames
    from gradvis_export.apps.video.encode import mp4_writer

    gen = np.random.default_rng(0)
    with mp4_writer(path, 10, width, height) as write:
        for _ in range(frames):
            write(gen.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return list(read_frames(path))  # the decoded frames (H.264 is lossy)


@pytest.mark.parametrize("frames", ["all", "middle"])
def test_video_per_frame(tiny, tmp_path, frames):
    from gradvis_export.apps.clip import preprocess_images
    from gradvis_export.apps.clip_video import explain_video_clip
    from gradvis_export.apps.video.decode import probe

    decoded = write_video(tmp_path / "in.mp4")
    out, sidecar = tmp_path / "out.mp4", tmp_path / "out.json"
    summary = explain_video_clip(
        tmp_path / "in.mp4", tiny, PROMPTS[0], out, frames=frames, clip_len=4, batch=4,
        sidecar=sidecar,
    )  # fmt: skip
    assert probe(out).frames == 6 and sidecar.exists()
    text = encode_prompts(tiny, PROMPTS[:1])
    with torch.no_grad():
        x = preprocess_images(tiny, np.stack(decoded))
        want = F.cosine_similarity(tiny.encode_image(x), text).numpy()
    if frames == "middle":  # clips of 4 frames: frames 0-3 show frame 2's, 4-5 frame 5's
        want = want[[2, 2, 2, 2, 5, 5]]
    np.testing.assert_allclose(summary["similarity"], want, rtol=1e-4, atol=1e-5)


def test_cli_clip_model(tmp_path, capsys):
    from gradvis_export.apps.cli import main

    write_video(tmp_path / "in.mp4", frames=2)
    out = tmp_path / "out.mp4"
    args = ["explain", str(tmp_path / "in.mp4"), "--model", "clip-ViT-B-32", "--quiet"]
    assert main([*args, "--prompt", "a red car", "--out", str(out)]) == 0
    assert out.exists() and (tmp_path / "out.json").exists()
    assert main(args) != 0
    assert "--prompt" in capsys.readouterr().err
