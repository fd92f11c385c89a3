#!/usr/bin/env python3
"""PTQ against quantization-aware training (issue 24): mAP@.5:.95 of both INT8 flavours, the
convs left in float, the time it took and the CPU latency side by side.

    python benchmarks/qat_study.py --data shapes/shapes.yaml --work runs/qat --machine cpu-2core-xeon \\
        [--weights yolov7-tiny-shapes.pt] [--student recovered.pt] [--recipes recipes.json] [--bench]

The model studied is ``--student`` (e.g. a pruned and recovered model) or ``--weights`` itself;
the FP32 teacher of the fine-tune is ``--weights`` (an unpruned model is its own teacher).
Every row is cached in ``WORK/rows/<name>.json`` (delete one to rerun it); the table goes to
``results/qat-<machine>.json``.  PTQ rows are ``fyexport calibrate`` with the given method
(bias correction on, as the build); QAT rows start from fyexport's calibration of the same
images (every conv but the 3 head convs quantized, no bias correction), fine-tune with fake
quantization in the loop (``fyexport.recover.qat``) and export through the PTQ path.
A recipe is a JSON object of :class:`~fyexport.recover.qat.QatConfig` fields plus
``name``, ``flavour`` (the flavour trained: trt or cpu) and ``start`` (the calibration method).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = REPO / "fyexport" / "assets" / "yolov7-tiny-shapes.pt"
FILES = {"cpu": "model.qdq.cpu.onnx", "trt": "model.qdq.onnx"}
PTQ = {"ptq-entropy": {"method": "entropy"}, "ptq-search": {"method": "search"},
       "ptq-search-ax4": {"method": "search", "auto_exclude": 4}}
DEFAULT_RECIPES = [
    {"name": "qat-frozen-trt", "flavour": "trt", "learn_scales": False},
    {"name": "qat-learned-trt", "flavour": "trt", "learn_scales": True},
]


def evaluate_map(runner, data, n) -> dict:
    from fyexport.evaluation.metrics import evaluate

    r = evaluate(runner, data, max_images=n)
    return {"map50": round(r.map50, 4), "map": round(r.map, 4)}


def onnx_map(path, data, n) -> dict:
    from fyexport.runners import open_runner

    return evaluate_map(open_runner(str(path), runtime="onnxruntime", device="cpu"), data, n)


def float_convs(qdq_path) -> int:
    """Convs of a Q/DQ model whose weights are not int8 (the 3 detection-head convs at least)."""
    import onnx

    m = onnx.load(str(qdq_path))
    dq = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    return sum(1 for n in m.graph.node if n.op_type == "Conv" and n.input[1] not in dq)


def cached(work: Path, name: str, fn) -> dict:
    f = work / "rows" / f"{name}.json"
    if f.exists():
        return json.loads(f.read_text())
    row = fn()
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(row, indent=1))
    print(json.dumps(row))
    return row


def ptq_row(name: str, kw: dict, fp32: Path, calib: Path, work: Path, a) -> dict:
    from fyexport.quantize import calibrate

    out = work / name
    stats = work / "calib.stats.json"
    if stats.exists():  # the statistics pass is shared by every method (same model, images, settings)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(stats, out / "calib.stats.json")
    t0 = time.perf_counter()
    calibrate(fp32, calib, out, num_images=a.calib_images, **kw)
    secs = time.perf_counter() - t0
    if not stats.exists():
        shutil.copy(out / "calib.stats.json", stats)
    row = {"kind": "ptq", "settings": kw, "calibrate_s": round(secs, 1)}
    for fl, f in _flavours(a).items():
        row[fl] = onnx_map(out / f, a.data, a.val_images) | {"float_convs": float_convs(out / f)}
    return row


def qat_row(recipe: dict, student, teacher, fp32: Path, calib: Path, work: Path, a) -> dict:
    from fyexport.data.labels import load_data_yaml
    from fyexport.quantize.qat_export import calibrated_ranges, start_qat, write_qat_models
    from fyexport.recover.qat import QatConfig, qat_finetune

    r = dict(recipe)
    name, flavour, start = r.pop("name"), r.pop("flavour", "trt"), r.pop("start", "entropy")
    torch_eval = r.pop("torch_eval", False)
    out = work / name
    t0 = time.perf_counter()
    cal_dir = work / f"qat-start-{start}"
    if (cal_dir / "calib.json").exists():
        from fyexport.quantize.qat import QuantRanges

        ranges = QuantRanges.from_calib_json(cal_dir / "calib.json")
    else:
        if (work / "calib.stats.json").exists():  # the same statistics as the PTQ rows
            cal_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(work / "calib.stats.json", cal_dir / "calib.stats.json")
        ranges = calibrated_ranges(fp32, calib, cal_dir, method=start, num_images=a.calib_images)
    t_cal = time.perf_counter() - t0
    q = start_qat(student, fp32, ranges, flavour, learn=r.get("learn_scales", True))
    spec = load_data_yaml(a.data)
    cfg = QatConfig(**({"img_size": a.img_size, "flavour": flavour} | r))
    res = qat_finetune(q, teacher, spec.images("train"), cfg, data=spec if a.labels else None)
    t1 = time.perf_counter()
    ex = write_qat_models(res.model, out, img_size=a.img_size, flavours=("trt", "cpu"))
    row = {"kind": "qat", "recipe": recipe, "start_calibration_s": round(t_cal, 1), "steps": res.steps,
           "train_s": round(res.seconds, 1), "export_s": round(time.perf_counter() - t1, 1),
           "images_per_s": round(res.images_per_s, 2), "amp": res.amp,
           "amax_change_max": round(max(abs(v) for v in ex.moved.values()), 4), "history": res.history[-3:],
           "fp32_of_trained_weights": onnx_map(ex.fp32_onnx, a.data, a.val_images)}
    for fl, f in FILES.items():
        row[fl] = onnx_map(out / f, a.data, a.val_images) | {"float_convs": float_convs(out / f)}
    if torch_eval:  # parity of the fake-quantized PyTorch model with its own flavour on ONNX Runtime
        from fyexport.runners.torch_runner import TorchRunner

        row["torch_fake_quant"] = {flavour: evaluate_map(TorchRunner(res.model, img_size=a.img_size), a.data,
                                                         a.val_images)}
    return row


def _flavours(a) -> dict:
    return {fl: f for fl, f in FILES.items() if fl in a.flavours.split(",")}


def latency(paths: dict, rounds: int, hw) -> dict:
    """Median and best ms per image of each model on ONNX Runtime, interleaved round by round
    (the machine's load moves between rounds, the models see the same)."""
    import statistics

    import numpy as np

    from fyexport.runners import open_runner

    x = np.random.default_rng(0).random((1, 3, *hw), dtype=np.float32)
    runners = {k: open_runner(str(p), runtime="onnxruntime", device="cpu").load() for k, p in paths.items()}
    times = {k: [] for k in paths}
    for _ in range(rounds):
        for k, r in runners.items():
            for i in range(4):
                t0 = time.perf_counter()
                r.infer(x)
                if i:
                    times[k].append(1e3 * (time.perf_counter() - t0))
    return {k: {"median_ms": round(statistics.median(v), 1), "best_ms": round(min(v), 1), "runs": len(v)}
            for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", default=str(REPO / "runs" / "qat"))
    ap.add_argument("--weights", default=str(TINY), help="the unpruned FP32 model (the teacher)")
    ap.add_argument("--student", help="the model to quantize (default: --weights)")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--calib-images", type=int, default=500)
    ap.add_argument("--val-images", type=int, default=None)
    ap.add_argument("--labels", action="store_true", help="add the YOLO loss on the data's labels")
    ap.add_argument("--recipes", help="a JSON list of recipes (default: frozen and learned, TensorRT flavour)")
    ap.add_argument("--ptq", default=",".join(PTQ), help="PTQ rows to run")
    ap.add_argument("--bench", type=int, default=0, help="latency rounds (0: none)")
    ap.add_argument("--tag", default="tiny")
    ap.add_argument("--flavours", default="trt,cpu", help="the Q/DQ flavours to evaluate")
    ap.add_argument("--quick", action="store_true", help="skip the FP32 evaluation of the trained weights")
    a = ap.parse_args()
    import fyexport
    from fyexport.core.machine import machine_info
    from fyexport.data.labels import load_data_yaml
    from fyexport.onnx.export import export_onnx

    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    teacher = fyexport.load(a.weights)
    student = fyexport.load(a.student) if a.student else teacher
    calib = load_data_yaml(a.data).images("train")[0].parent
    fp32 = work / "model.onnx"
    if not fp32.exists():
        export_onnx(student, fp32, img_size=a.img_size)
    rows = {"fp32": cached(work, "fp32", lambda: {"kind": "fp32", "onnxruntime": onnx_map(fp32, a.data,
                                                                                            a.val_images)})}
    for name in [p for p in a.ptq.split(",") if p]:
        rows[name] = cached(work, name, lambda name=name: ptq_row(name, PTQ[name], fp32, calib, work, a))
    recipes = json.loads(Path(a.recipes).read_text()) if a.recipes else DEFAULT_RECIPES
    for rec in recipes:
        rows[rec["name"]] = cached(work, rec["name"], lambda rec=rec: qat_row(rec, student, teacher, fp32, calib,
                                                                              work, a))
    lat = None
    if a.bench:
        paths = {"fp32": fp32} | {f"{n} {fl}": work / n / f for n in rows if n != "fp32"
                                  for fl, f in FILES.items() if (work / n / f).exists()}
        lat = latency(paths, a.bench, (a.img_size, a.img_size))
    out = HERE / "results" / f"qat-{a.tag}-{a.machine}.json"
    out.write_text(json.dumps({"machine": machine_info(), "settings": vars(a), "rows": rows, "latency": lat},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
