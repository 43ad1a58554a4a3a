"""Latency of exported explainers vs. plain inference and vs. eager libraries (CPU, batch 1).

Two suites per model, each timed side by side in one process:

* ``captum``: the bare model (ONNX via ``torch.onnx.export(dynamo=True)``, TorchScript via
  ``torch.jit.trace``) and three gradvis explainers (Grad-CAM, guided backprop, guided
  Grad-CAM; ONNX and TorchScript via ``gv.export``) against captum's eager equivalents.
* ``cam``: the CAM family (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, Grad-CAM element-wise,
  LayerCAM, EigenCAM, EigenGradCAM, ScoreCAM, AblationCAM) exported to ONNX and run on
  onnxruntime, against the bare model on onnxruntime and against pytorch-grad-cam's eager
  classes on the same input, target layer and explicit class target.

Explainer artifacts are loaded through ``gradvis_runtime.load``.  Timing:

* every variant gets ``--warmup`` untimed calls first;
* then ``repeats`` rounds; in each round every variant is called once (round-robin), so
  machine noise hits all variants alike.  Within a round the variants are grouped by
  runtime (onnxruntime, TorchScript, eager) so the thread pools of the two libraries hand
  over only twice per round; the order inside a group rotates from round to round.
* CAM suite, slow variants (ours ScoreCAM: ceil(K / chunk_size) batched forwards, K forwards in
  all; pytorch-grad-cam's ScoreCAM and AblationCAM: K forwards in batches of 16 / 32, the
  latter's with the target layer swapped for its cached, ablated output) take from seconds to
  minutes per call: they are timed apart, after the others, with
  ``--slow-repeats`` round-robin rounds (default 1) after ``--slow-warmup`` warm-up calls
  (default 0, for ours and pytorch-grad-cam alike: a first call's one-off costs are small
  against K forwards; on this machine our ScoreCAM's first and second calls differed by less
  than the noise, 145 s / 139 s on ResNet-50, 31 s / 39 s on X3D-S).  ``--skip-slow`` leaves
  them out.

The reported number is the median wall time of one call, in milliseconds.  Ratios:
explainer / plain inference on the same runtime, and eager library / exported explainer
(ratio of the medians, which the PASS/MISS verdicts use, and the median of the per-round
ratios, "paired").

Setup notes:

* onnxruntime sessions (the explainers' through ``gradvis_runtime.load(path, threads=N)``,
  the bare model's built with the same options) use ``intra_op_num_threads=N``; torch uses
  ``torch.set_num_threads(N)``.  ``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (see below).
* The bare-model ONNX uses the exporter's default ``optimize=True``; gv.export's own
  ``optimize=False`` would leave the bare ResNet-50 ~1.8x slower (an easy baseline).
* An explainer artifact that fails only gv.export's comparison with eager is re-exported
  with ``check=False`` and timed anyway, marked ``*`` (``--strict`` skips it instead).
* captum's GuidedBackprop hooks nn.ReLU modules only: fine for ResNet-50, and for X3D it
  matches gradvis ``activations="relu"`` (X3D's Swish/Sigmoid are guided by neither).
* pytorch-grad-cam runs with its defaults (ScoreCAM ``batch_size`` 16, AblationCAM
  ``batch_size`` 32, no smoothing); each of its CAM objects gets its own copy of the model,
  since it leaves forward hooks on the target layer that would otherwise fire in every other
  variant's forward.  Its progress bars are off (``TQDM_DISABLE=1``).
* Our ScoreCAM / AblationCAM use the model's ``chunk_size`` (channels per batched forward,
  ``ModelCase.chunk_sizes``).  ScoreCAM is exported with ``check=False`` (marked +): the guard
  would run eager ScoreCAM, K forwards per sample, at batches 3 and 1 (minutes for either
  model here, on top of the eager batch-2 call gv.export makes before tracing); the tests cover
  those artifacts.  The "agree" columns compare our heatmap with pytorch-grad-cam's on the
  benchmark input (Pearson r, max abs difference; both maps in [0, 1]).

    python benchmarks/latency.py                        # both models, both suites
    python benchmarks/latency.py --models resnet50 --quick
    python benchmarks/latency.py --suite cam --methods gradcam,scorecam --slow-repeats 2
    python benchmarks/latency.py --keep /tmp/gv-art --reuse --json out.json

Progress goes to stderr; the table goes to stdout.  The methods are the registry's
(``gv.METHODS``; ``--methods`` takes its names).  The parts: ``latency_cases.py`` (constants,
targets, models, methods), ``latency_variants.py`` (exports and the variants of each suite),
``latency_measure.py`` (timing), ``latency_report.py`` (tables, verdicts, provenance).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

# libgomp (torch's OpenMP) spin-waits at every barrier by default; on a 2-core machine shared
# with other work, 2 spinning threads make each ResNet-50 forward ~20x slower (2.5 s instead
# of ~0.1 s here).  Threads that sleep when idle give compute-bound numbers.  Set before torch
# loads OpenMP; an OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# pytorch-grad-cam's ScoreCAM / AblationCAM draw tqdm progress bars (read when tqdm loads).
os.environ.setdefault("TQDM_DISABLE", "1")

# the sibling modules (this script's folder is on sys.path) load torch: after the settings above
import torch  # noqa: E402
from latency_cases import (  # noqa: E402
    BUILDERS,
    CLIP_QUICK_REPEATS,
    CLIP_REPEATS,
    DEFAULT_REPEATS,
    MODELS,
    QUICK_CAM_METHODS,
    QUICK_REPEATS,
    SUITES,
    ModelCase,
    cam_methods,
    log,
)
from latency_measure import measure, measure_slow  # noqa: E402
from latency_report import (  # noqa: E402
    cam_report,
    clip_report,
    code_under_test,
    fmt_load,
    loads,
    model_report,
    provenance,
)
from latency_variants import (  # noqa: E402
    Exports,
    build_cam_variants,
    build_clip_variants,
    build_variants,
)

#: the checkout this script lives in; its gradvis_export / gradvis_runtime are the ones measured
#: (not whatever an editable install elsewhere points to), unless --installed
REPO = Path(__file__).resolve().parent.parent


def captum_suite(
    case: ModelCase, workdir: Path, args: argparse.Namespace, repeats: int, warmup: int
) -> tuple[list[str], dict]:
    """One model's captum suite: export, time, report."""
    ex = Exports(case, workdir, args)
    variants = build_variants(ex)
    load_before = os.getloadavg()
    measure(variants, repeats, warmup, case.name)
    load_after = os.getloadavg()
    lines, data = model_report(case, variants, ex.errors, ex.check_failed, ex.seconds)
    data["repeats"], data["warmup"] = repeats, warmup
    data["loadavg_1_5_15"] = {"before": load_before, "after": load_after}
    lines.append(f"load average (1/5/15 min) {loads(load_before, load_after)}")
    lines.insert(
        1,
        f"{repeats} round-robin rounds, {warmup} warm-up call(s) per variant, "
        f"{args.threads} threads, batch 1",
    )
    return lines, data


def cam_suite(
    case: ModelCase,
    workdir: Path,
    args: argparse.Namespace,
    methods: list[str],
    repeats: int,
    warmup: int,
) -> tuple[list[str], dict]:
    """One model's CAM suite: export, time the fast variants, then the slow ones, report."""
    name = case.name
    ex = Exports(case, workdir, args)
    variants, work = build_cam_variants(ex, methods)
    fast = [v for v in variants if not v.slow]
    load_before = os.getloadavg()
    measure(fast, repeats, warmup, f"{name} CAM")
    load_fast = os.getloadavg()
    slow = measure_slow(
        [v for v in variants if v.slow], args.slow_repeats, f"{name} CAM", ex.errors
    )
    load_after = os.getloadavg()
    lines, data = cam_report(
        case,
        fast + slow,
        ex,
        methods,
        work,
        (repeats, warmup, args.slow_repeats, args.slow_warmup),
    )
    lines.append(
        f"load average (1/5/15 min) {loads(load_before, load_fast)}"
        + (f", after the slow variants {fmt_load(load_after)}" if slow else "")
    )
    data["loadavg_1_5_15"] = {
        "before": load_before,
        "after_fast": load_fast,
        "after": load_after,
    }
    return lines, data


def clip_suite(
    args: argparse.Namespace, workdir: Path, repeats: int, warmup: int
) -> tuple[list[str], dict]:
    """Grad-ECLIP on CLIP ViT-B/32 against the bare image encoder, on onnxruntime."""
    variants, errors = build_clip_variants(args, workdir)
    load_before = os.getloadavg()
    measure(variants, repeats, warmup, "clip")
    load_after = os.getloadavg()
    return clip_report(variants, errors, (repeats, warmup, args.threads), (load_before, load_after))


def main(argv: list[str] | None = None) -> int:
    # which gradvis_export to measure is chosen before anything imports it (the method names
    # below come from its registry)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--installed", action="store_true")
    if not first.parse_known_args(argv)[0].installed:
        sys.path[:0] = [str(REPO), str(REPO / "runtime")]
    cam_names = list(cam_methods())

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per model (default: resnet50 20, x3d_s 10)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: fewer rounds (resnet50 5, x3d_s 3), 1 warm-up call, --skip-slow, CAM "
        f"methods {','.join(QUICK_CAM_METHODS)} unless --methods",
    )
    parser.add_argument(
        "--suite",
        default="all",
        choices=("all", *SUITES),
        help="captum: Grad-CAM / guided backprop vs captum (ONNX + TorchScript); cam: the CAM "
        "family on onnxruntime vs pytorch-grad-cam; clip: Grad-ECLIP on CLIP ViT-B/32 vs its "
        "image encoder (ignores --models); runtimes: one Grad-CAM on onnxruntime, TorchScript, "
        "AOTInductor, the C++ library and its Python bridge (benchmarks/runtimes.py); all "
        "(default): the four",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"CAM suite: comma-separated subset of {','.join(cam_names)} (default: all)",
    )
    parser.add_argument(
        "--skip-slow",
        action="store_true",
        help="CAM suite: leave out the K-forward variants (our ScoreCAM, pytorch-grad-cam's "
        "ScoreCAM and AblationCAM)",
    )
    parser.add_argument(
        "--slow-repeats",
        type=int,
        default=1,
        help="CAM suite: timed rounds of the slow variants (default 1; pytorch-grad-cam's "
        "ScoreCAM on ResNet-50 takes minutes per call)",
    )
    parser.add_argument(
        "--slow-warmup",
        type=int,
        default=0,
        help="CAM suite: warm-up calls of each slow variant (default 0)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed calls per variant before timing (default 3)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="intra-op threads for onnxruntime and torch (default 2)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="write the artifacts to this folder (default: a temporary one)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: reuse artifacts already in the folder"
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip gv.export's artifact-vs-eager check (faster exports)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="do not time explainer artifacts whose export check failed (default: re-export "
        "them with check=False, time them and mark them *)",
    )
    parser.add_argument(
        "--installed",
        action="store_true",
        help="measure the installed gradvis_export / gradvis_runtime instead of this checkout's",
    )
    parser.add_argument(
        "--profile",
        choices=["onnxruntime-cpu"],
        default=None,
        help="export every ONNX artifact (explainers and the bare model) with this gv.export "
        "profile (onnxruntime-cpu: X3D's depthwise 3-D convolutions as 2-D ones)",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failed exports")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.reuse and args.keep is None:
        parser.error("--reuse needs --keep DIR")
    suites = SUITES if args.suite == "all" else (args.suite,)
    if args.methods is None:
        args.methods = ",".join(QUICK_CAM_METHODS if args.quick else cam_names)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in cam_names]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(cam_names)}")
    if args.quick:
        args.skip_slow = True
    if args.slow_repeats < 1 or args.slow_warmup < 0:
        parser.error("--slow-repeats must be >= 1, --slow-warmup >= 0")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)

    torch.set_num_threads(args.threads)
    import captum  # noqa: F401 - every library of the run, before the first export
    import onnxruntime  # noqa: F401
    import pytorch_grad_cam  # noqa: F401

    code = code_under_test()
    log(f"measuring {code['gradvis_export']} (gradvis {code['version']}, {code['git']})")

    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gv-bench-")))
        log(f"artifacts in {workdir}")

        results: dict[str, dict] = {}
        cam_results: dict[str, dict] = {}
        for name in names if {"captum", "cam"} & set(suites) else []:
            repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)[name]
            log(f"{name}: building the model")
            case = BUILDERS[name]()
            if "captum" in suites:
                lines, results[name] = captum_suite(case, workdir, args, repeats, warmup)
                print("\n".join(lines) + "\n", flush=True)
                gc.collect()
            if "cam" in suites:
                lines, cam_results[name] = cam_suite(case, workdir, args, methods, repeats, warmup)
                print("\n".join(lines) + "\n", flush=True)
                gc.collect()
            del case
            gc.collect()
        clip_results: dict[str, object] = {}
        if "clip" in suites:
            repeats = args.repeats or (CLIP_QUICK_REPEATS if args.quick else CLIP_REPEATS)
            lines, clip_results = clip_suite(args, workdir, repeats, warmup)
            print("\n".join(lines) + "\n", flush=True)
        runtime_results: dict[str, object] = {}
        if "runtimes" in suites:  # one Grad-CAM per model on every runtime (benchmarks/runtimes.py)
            from runtimes import runtimes_suite

            cases = [BUILDERS[name]() for name in names]
            lines, runtime_results = runtimes_suite(args, workdir, cases, warmup, log)
            print("\n".join(lines) + "\n", flush=True)

    meta, footer = provenance(args, suites, methods, code)
    print(footer)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "models": results,
                    "cam": cam_results,
                    "clip": clip_results,
                    "runtimes": runtime_results,
                },
                indent=2,
            )
        )
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
