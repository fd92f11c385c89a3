"""Bias correction for the quantized convs.

Clipping activations at the calibrated amax and rounding weights shift the *mean* output
of each quantized conv (clipping mostly removes large values, so means drop).  For every
quantized conv, :func:`local_shifts` measures that shift on calibration images from the
conv's own quantization alone (fed the FP32 input), and :func:`build_qdq` subtracts it from
the conv's float bias.  Measuring each conv locally avoids the over-correction of a
whole-network one-shot estimate (benchmarks/README.md has the measurements).  Only float
biases change: Q/DQ placement, scales and the TensorRT cache stay exactly as calibrated.
"""
from __future__ import annotations

import numpy as np

from ..core.log import progress


def local_shifts(proto, plan, amax: dict, gmin: dict, images: np.ndarray, flavour: str = "trt") -> dict:
    """Per quantized conv, the mean per-channel output error its *own* quantization causes:
    each conv is duplicated beside the FP32 one, fed the same FP32 input through its Q/DQ and
    int8 weights, and the two outputs are compared.  Errors of earlier layers are not
    compounded, so correcting every layer at once does not over-correct."""
    import onnx
    from onnx import helper, numpy_helper

    from ..onnx.facts import cpu_session, image_input
    from .qdq import act_params, quantized_twin

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    extra_nodes, extra_inits, pairs = [], [], {}
    unsigned = flavour == "cpu"
    in_name = image_input(proto).name
    for n in list(g.node):
        if n.op_type != "Conv" or n.name not in plan.conv_nodes:
            continue
        x = n.input[0]
        gid = plan.tensor_group[x]
        if unsigned and x == in_name:
            scale, zp = np.float32(1 / 255), np.uint8(0)
        else:
            scale, zp = act_params(gmin.get(gid, 0.0), amax[gid], unsigned)
        k = len(pairs)
        nodes, new_inits, y = quantized_twin(n, numpy_helper.to_array(inits[n.input[1]]).astype(np.float32), f"bc{k}",
                                             scale, zp)
        extra_nodes += nodes
        extra_inits += new_inits
        pairs[n.name] = (n.output[0], y)
    g.node.extend(extra_nodes)
    g.initializer.extend(extra_inits)
    del g.output[:]
    for ref, q in pairs.values():
        g.output.extend([helper.make_tensor_value_info(ref, onnx.TensorProto.FLOAT, None),
                         helper.make_tensor_value_info(q, onnx.TensorProto.FLOAT, None)])
    sess = cpu_session(m)
    names = [o.name for o in sess.get_outputs()]
    acc: dict = {}
    with progress("bias correction", len(images)) as bar:
        for img in images:
            outs = dict(zip(names, sess.run(names, {in_name: img[None]})))
            for conv, (ref, q) in pairs.items():
                d = (outs[q] - outs[ref]).mean(axis=(0, 2, 3), dtype=np.float64)
                acc[conv] = d if conv not in acc else acc[conv] + d
            bar.advance()
    return {c: (v / len(images)).tolist() for c, v in acc.items()}
