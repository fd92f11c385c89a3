"""Model statistics: parameters and MACs as Torch-Pruning counts them, and a model's facts."""
from __future__ import annotations


def count_macs_params(model, img_size=640) -> tuple[int, int]:
    """MACs and parameters as Torch-Pruning counts them (batch 1, square or (h, w) input)."""
    import torch
    import torch_pruning as tp

    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, *hw))
    model.train(was_training)
    return int(macs), int(params)


def describe_model(model, img_size=640) -> dict:
    head = model.head
    macs, params = count_macs_params(model, img_size)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return {
        "params": params,
        "macs": macs,
        "gmacs": round(macs / 1e9, 3),
        "count_size": list(hw),
        "nc": int(model.nc),
        "names": list(model.names),
        "stride": [int(s) for s in head.stride.tolist()],
        "anchors": head.anchor_grid.detach().float().view(head.nl, -1).tolist(),
        "head": type(head).__name__,
        "source_head": model.yaml["head"][-1][2],
        "layers": len(model.model),
        "form": model.form,
        "dtype": ",".join(dtypes),
        "source_dtype": model.meta.get("source_dtype"),
        "source_form": model.meta.get("source_form"),
        "prune": model.meta.get("prune"),
        "recover": model.meta.get("recover"),
    }
