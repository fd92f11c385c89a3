#!/usr/bin/env python3
"""What calibration costs on top of plain inference (issue: histogram + KL <= 25%).

    python benchmarks/calib_cost.py MODEL.onnx IMAGES_DIR [--num-images 500] [--rounds 3] [--out cost.json]

1. pure inference: the FP32 model on ONNX Runtime over the sampled images, with the same
   reading and letterboxing calibration does;
2. exposed inference: the same, with the tensors calibration histograms exposed as outputs
   (ONNX Runtime copies them out: a cost of calibrating, but not histogram work);
3. calibration statistics only (no Q/DQ writing, no bias correction): inference with the
   quantized tensors exposed + streaming histograms (counted between two inferences on
   one thread per core) + the KL search;
and reports the wall times, the shares (3-2)/1 (histogram + KL work) and 3/1 - 1 (all
of calibration's statistics pass over pure inference), and the peak resident memory of
each phase (each runs in its own process).  A shared 2-core host drifts by several
percent within minutes, so the three phases run ``--rounds`` times, each round in a
rotated order, and the medians are reported next to every round.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def pure(model: str, images: str, n: int) -> dict:
    from fyexport.data.images import iter_prepared
    from fyexport.data.selection import select_images
    from fyexport.onnx.facts import cpu_session

    sel = select_images(images, n, 0)
    sess = cpu_session(model)
    t = time.perf_counter()
    k = 0
    for x in iter_prepared(sel.paths, tuple(d for d in sess.get_inputs()[0].shape[2:])):
        sess.run(None, {"images": x[None]})
        k += 1
    return {"images": k, "seconds": time.perf_counter() - t}


def exposed(model: str, images: str, n: int) -> dict:
    import onnx

    from fyexport.data.images import iter_prepared
    from fyexport.data.selection import select_images
    from fyexport.onnx.facts import image_input
    from fyexport.quantize.collect import calibration_session, exposed_tensors
    from fyexport.quantize.graph import analyse

    proto = onnx.load(model)
    reps, extra = exposed_tensors(analyse(proto))
    outs = reps + extra
    sel = select_images(images, n, 0)
    sess = calibration_session(proto, outs)  # the very session calibration runs
    t = time.perf_counter()
    k = 0
    inp = image_input(proto)
    for x in iter_prepared(sel.paths, inp.hw):
        sess.run(None, {inp.name: x[None]})
        k += 1
    return {"images": k, "seconds": time.perf_counter() - t, "exposed_tensors": len(outs)}


def stats(model: str, images: str, n: int) -> dict:
    import onnx

    from fyexport.data.selection import select_images
    from fyexport.quantize.collect import collect
    from fyexport.quantize.entropy import compute_amax
    from fyexport.quantize.graph import analyse

    proto = onnx.load(model)
    plan = analyse(proto)
    sel = select_images(images, n, 0)
    col = collect(proto, plan, sel, batch=8)
    t_kl = time.perf_counter()
    for h in col.hists.values():
        compute_amax(h, "entropy")
    kl = time.perf_counter() - t_kl
    # col.seconds starts once the session exists, like the other phases' clocks
    return {"images": col.images_used, "seconds": col.seconds + kl, "inference_s": col.infer_seconds,
            "histogram_s": col.stats_seconds, "kl_s": kl, "groups": len(plan.groups),
            "histogrammed_tensors": sum(len(v) for v in plan.reps.values())}


def child(phase: str, model: str, images: str, n: int) -> dict:
    code = (f"import json,resource,sys; sys.path.insert(0,{sys.path[0]!r}); from calib_cost import {phase}; "
            f"r={phase}({model!r},{images!r},{n}); "
            "r['peak_rss_mb']=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024; print(json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--num-images", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3,
                    help="repeat the three phases, each round in a rotated order; medians are reported")
    ap.add_argument("--out")
    a = ap.parse_args()
    import statistics

    from fyexport.core.machine import cpu_name, physical_cores

    phases = ["pure", "exposed", "stats"]
    rounds = []
    for r in range(a.rounds):
        order = phases[r % 3:] + phases[:r % 3]  # host drift does not always hit the same phase
        got = {ph: child(ph, a.model, a.images, a.num_images) for ph in order}
        p, e, s = got["pure"], got["exposed"], got["stats"]
        rounds.append({"order": order, "pure_inference": p, "exposed_inference": e, "calibration_statistics": s,
                       "histogram_plus_kl_share_of_pure_inference": (s["seconds"] - e["seconds"]) / p["seconds"],
                       "exposing_share_of_pure_inference": e["seconds"] / p["seconds"] - 1,
                       "calibration_wall_over_pure": s["seconds"] / p["seconds"]})
        print(f"round {r + 1}: histogram + KL {rounds[-1]['histogram_plus_kl_share_of_pure_inference']:.1%} "
              f"of pure inference ({p['seconds']:.1f} s pure, {e['seconds']:.1f} s exposed, {s['seconds']:.1f} s "
              "statistics)", file=sys.stderr)

    def med(phase, key=None):
        return statistics.median(rd[phase] if key is None else rd[phase][key] for rd in rounds)

    res = {"machine": {"cpu": cpu_name(), "cores": physical_cores()}, "rounds": len(rounds),
           "median": {"pure_inference_s": med("pure_inference", "seconds"),
                      "exposed_inference_s": med("exposed_inference", "seconds"),
                      "calibration_statistics_s": med("calibration_statistics", "seconds"),
                      "histogram_s": med("calibration_statistics", "histogram_s"),
                      "kl_s": med("calibration_statistics", "kl_s"),
                      "peak_rss_mb": max(rd["calibration_statistics"]["peak_rss_mb"] for rd in rounds),
                      "histogram_plus_kl_share_of_pure_inference": med("histogram_plus_kl_share_of_pure_inference"),
                      "exposing_share_of_pure_inference": med("exposing_share_of_pure_inference"),
                      "calibration_wall_over_pure": med("calibration_wall_over_pure")},
           "per_round": rounds}
    print(json.dumps(res["median"], indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
