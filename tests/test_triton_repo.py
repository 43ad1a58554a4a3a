"""`gradvis triton-repo`: the model repository's config.pbtxt against the artifact itself.

Triton is not run here (no container engine).  Instead config.pbtxt is parsed with Triton's
own ModelConfig protobuf (tritonclient's model_config_pb2: unknown fields or enum values fail
the parse), and every input/output is checked against the artifact read independently of our
writer: the ONNX graph through the `onnx` package, the TorchScript module through torch.jit
(its forward signature and one call).  Requests shaped as the config says (batch + dims,
then `reshape`) are run through the served file and compared with the eager explainer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_cases as rc
from models import mixed_relu_net

import gradvis_export as gv
from gradvis_export.apps import cli
from gradvis_export.core.preprocess import UInt8Input

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# ONNX element types -> Triton's, and Triton's -> numpy (Triton's datatype table)
ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
}
TRITON_TO_NUMPY = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_UINT8": np.uint8}


def read_config(folder: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((folder / "config.pbtxt").read_text(), config)
    return config


def type_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def graph_signature(path: Path) -> tuple[list, list]:
    """(name, Triton type, dims with -1 for symbolic) of the ONNX graph's inputs and outputs."""
    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}

    def describe(values):
        return [
            (
                v.name,
                ONNX_TO_TRITON[v.type.tensor_type.elem_type],
                [
                    d.dim_value if d.HasField("dim_value") else -1
                    for d in v.type.tensor_type.shape.dim
                ],
            )
            for v in values
            if v.name not in initializers
        ]

    return describe(model.graph.input), describe(model.graph.output)


def request(config, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs as a Triton client sends them (batch + dims), then reshaped as Triton does."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in config.input:
        dtype = TRITON_TO_NUMPY[type_name(spec.data_type)]
        shape = [batch, *spec.dims]
        if dtype == np.float32:
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.uint8:
            value = rng.integers(0, 256, shape, dtype=dtype)
        else:  # a class per sample, and -1 = argmax for every other one
            value = np.where(np.arange(batch) % 2 == 0, np.arange(batch) % 3, -1)
            value = value.reshape(shape).astype(dtype)
        if spec.HasField("reshape"):
            value = value.reshape([batch, *spec.reshape.shape])
        feeds[spec.name] = value
    return feeds


def check_against_graph(config, artifact: Path, max_batch_size: int = 8) -> None:
    inputs, outputs = graph_signature(artifact)
    assert config.max_batch_size == max_batch_size
    for specs, graph in ((config.input, inputs), (config.output, outputs)):
        assert [s.name for s in specs] == [name for name, _, _ in graph]
        for spec, (name, dtype, dims) in zip(specs, graph):
            assert type_name(spec.data_type) == dtype, name
            assert dims[0] == -1, f"{name}: the graph's first dimension is the batch"
            if len(dims) == 1:  # batch only: Triton's [1] reshaped to the model's []
                assert list(spec.dims) == [1] and list(spec.reshape.shape) == [], name
            else:
                assert list(spec.dims) == dims[1:] and not spec.HasField("reshape"), name


@pytest.fixture(scope="module")
def uint8_artifact(tmp_path_factory) -> tuple[Path, gv.GradCAM]:
    spec = mixed_relu_net()
    eager = gv.GradCAM(spec.model, spec.target_layer)
    wrapped = UInt8Input(eager, overlay=0.5)
    example = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    return gv.export(wrapped, example, tmp_path_factory.mktemp("u8") / "u8.onnx"), wrapped


def test_onnx_config_matches_the_graph_and_serves_eager_results(tmp_path):
    artifact = rc.artifact("x3d", "onnx")
    repo = tmp_path / "model_repository"
    assert cli.main(["triton-repo", "--artifact", str(artifact), "--out", str(repo)]) == 0
    folder = repo / "x3d"
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt", "gradvis.json"]
    assert (folder / "1" / "model.onnx").read_bytes() == artifact.read_bytes()
    config = read_config(folder)
    assert config.name == "x3d" and config.platform == "onnxruntime_onnx"
    assert config.HasField("dynamic_batching")
    assert not config.optimization.HasField("execution_accelerators")
    check_against_graph(config, artifact)
    assert [list(s.dims) for s in config.input] == [[3, 4, 64, 64], [1]]
    assert [type_name(s.data_type) for s in config.input] == ["TYPE_FP32", "TYPE_INT64"]
    # requests shaped as the config says, through the served file, equal eager autograd
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"))
    for batch in (1, 3):
        feeds = request(config, batch, seed=batch)
        got = dict(zip([o.name for o in config.output], session.run(None, feeds)))
        for spec in config.output:
            assert list(got[spec.name].shape) == [batch, *spec.dims]
        want = rc.eager("x3d", feeds["input"], feeds["target"])
        rc.assert_close(got, want, f"triton-shaped batch {batch}")


def test_uint8_artifact_types_and_tensorrt_variant(uint8_artifact, tmp_path):
    artifact, wrapped = uint8_artifact
    repo = tmp_path / "repo"
    code = cli.main(
        ["triton-repo", "--artifact", str(artifact), "--out", str(repo), "--name", "lights",
         "--backend", "tensorrt", "--max-batch-size", "16"]
    )  # fmt: skip
    assert code == 0
    config = read_config(repo / "lights")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    check_against_graph(config, artifact, max_batch_size=16)
    types = {s.name: type_name(s.data_type) for s in [*config.input, *config.output]}
    assert types == {
        "input": "TYPE_UINT8",
        "target": "TYPE_INT64",
        "logits": "TYPE_FP32",
        "heatmap": "TYPE_FP32",
        "overlay": "TYPE_UINT8",
    }
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt"]
    assert accelerators[0].parameters["precision_mode"] == "FP32"
    assert [
        model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group
    ] == ["KIND_GPU"]
    session = ort.InferenceSession(str(repo / "lights" / "1" / "model.onnx"))
    feeds = request(config, 2, seed=5)
    got = dict(zip([o.name for o in config.output], session.run(None, feeds)))
    want = wrapped(torch.from_numpy(feeds["input"]), torch.from_numpy(feeds["target"]))
    np.testing.assert_allclose(got["heatmap"], want.heatmap.detach().numpy(), atol=1e-4)
    assert np.abs(got["overlay"].astype(int) - want.overlay.numpy()).max() <= 1


def test_torchscript_config_follows_the_positional_names(tmp_path):
    artifact = rc.artifact("x3d", "torchscript")
    repo = tmp_path / "repo"
    assert cli.main(["triton-repo", "--artifact", str(artifact), "--out", str(repo)]) == 0
    folder = repo / "x3d"
    assert (folder / "1" / "model.pt").read_bytes() == artifact.read_bytes()
    config = read_config(folder)
    assert config.platform == "pytorch_libtorch" and config.max_batch_size == 8
    assert [s.name for s in config.input] == ["INPUT__0", "INPUT__1"]
    assert [s.name for s in config.output] == ["OUTPUT__0", "OUTPUT__1"]
    module = torch.jit.load(str(folder / "1" / "model.pt"))
    arguments = [a.name for a in module.forward.schema.arguments[1:]]  # after self
    names = json.loads((folder / "gradvis.json").read_text())["triton_names"]
    assert [names["inputs"][s.name] for s in config.input] == arguments == ["input", "target"]
    assert list(names["outputs"].values()) == ["logits", "heatmap"]
    for batch in (1, 3):
        feeds = request(config, batch, seed=batch)
        with torch.inference_mode():
            result = module(*(torch.from_numpy(feeds[s.name]) for s in config.input))
        assert len(result) == len(config.output)
        for spec, value in zip(config.output, result):
            assert list(value.shape) == [batch, *spec.dims]
            assert value.numpy().dtype == TRITON_TO_NUMPY[type_name(spec.data_type)]
        want = rc.eager("x3d", feeds["INPUT__0"], feeds["INPUT__1"])
        got = {"logits": result[0].numpy(), "heatmap": result[1].numpy()}
        rc.assert_close(got, want, f"torchscript batch {batch}")


def test_existing_model_needs_force_and_bad_artifacts_are_refused(tmp_path, capsys):
    artifact = rc.artifact("x3d", "onnx")
    repo = tmp_path / "repo"
    args = ["triton-repo", "--artifact", str(artifact), "--out", str(repo)]
    assert cli.main(args) == 0
    capsys.readouterr()
    (repo / "x3d" / "config.pbtxt").write_text("edited")
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    assert (repo / "x3d" / "config.pbtxt").read_text() == "edited"  # untouched
    assert cli.main([*args, "--force"]) == 0
    capsys.readouterr()
    read_config(repo / "x3d")  # replaced by a whole, valid folder
    assert sorted(p.name for p in repo.iterdir()) == ["x3d"]  # no staging folders left
    wrong = [
        ["--artifact", str(tmp_path / "missing.onnx")],
        ["--artifact", str(rc.artifact("x3d", "torchscript")), "--backend", "tensorrt"],
        ["--artifact", str(artifact), "--backend", "pytorch"],
        ["--artifact", str(artifact), "--name", "../escape"],
    ]
    for extra in wrong:
        assert cli.main(["triton-repo", *extra, "--out", str(tmp_path / "other")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gradvis: error: "), extra
    assert not (tmp_path / "other").exists()
