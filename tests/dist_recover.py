"""A small recovery run for the distributed tests:
``python dist_recover.py OUT DATA BATCH EPOCHS SEED [resume | interrupt-at=STEP]``, alone or under
torchrun.  The EMA decay is 0, so the saved weights are the student's own.  ``interrupt-at=N``
raises KeyboardInterrupt right after step N's state is saved, as a Ctrl-C there would (the
interruption lives here, not in the package).  ``DIST_RECONSTRUCT=N`` sets the
reconstruction crops (default: fyexport's)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import TINY


def interrupt_after_saving(step: int) -> None:
    from fyexport.recover.train import Trainer

    save = Trainer.save_state

    def save_then_stop(self):
        save(self)
        if self.progress.step == step:
            raise KeyboardInterrupt

    Trainer.save_state = save_then_stop


def main(out, data, batch, epochs, seed, resume=False):
    import fyexport
    from fyexport.prune import PruneConfig, prune
    from fyexport.recover import RecoverConfig, recover, training_images

    paths, spec = training_images(data=data)
    student, _ = prune(fyexport.load(TINY), PruneConfig(ratio=0.3))
    cfg = RecoverConfig(epochs=epochs, img_size=128, batch=batch, lr=2e-3, warmup_iters=1, ema_decay=0.0, seed=seed,
                        save_every=1, amp=False, workers=0, device="cpu", check_every=10**6,
                        reconstruct=int(os.environ.get("DIST_RECONSTRUCT", RecoverConfig.reconstruct)))
    recover(student, fyexport.load(TINY), paths, out, cfg, data=spec, resume=resume)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    a = sys.argv[1:]
    if len(a) > 5 and a[5].startswith("interrupt-at="):
        interrupt_after_saving(int(a[5].split("=")[1]))
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), len(a) > 5 and a[5] == "resume")
