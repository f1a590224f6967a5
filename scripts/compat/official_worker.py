"""Drive the official ``nnInteractiveInferenceSession`` for ``compare.py`` (run with the official venv).

This file runs inside the virtual environment that holds ``nninteractive==2.6.0`` (built by
``scripts/compat/setup_official.sh``); it imports nothing from nnint. ``compare.py`` starts it as a
subprocess and talks to it with pickled messages, one per line of the protocol:

* request (stdin): ``(command, payload)``, pickled with ``pickle.dump`` (protocol 4);
* reply (stdout): ``{"ok": True, ...}`` or ``{"ok": False, "error": "...", "traceback": "..."}``.

Everything the official package prints goes to stderr, so stdout carries only replies.

Commands:

``init``   ``{"model_folder", "fold", "threads"}`` -> loads the model (fp32, CPU, no torch.compile)
``image``  ``{"image": ndarray (z, y, x)}`` -> new session state: ``set_image(image[None])`` and a
           fresh zeroed uint8 target buffer
``step``   ``{"op": ..., "seed": int, ...}`` -> seeds NumPy's global RNG with ``seed`` (the refinement
           planner's random fallback draws from it), runs the interaction, and returns
           ``{"bbox": [[lo, hi]] * 3 or None, "seconds": float (wall), "cpu": float (process CPU time), "buffer": ndarray uint8, "result": ...,
           "zoom": final zoom factor or None, "boxes": refinement boxes}`` (zoom and boxes are
           parsed from what the session prints)
``quit``   -> exits
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import sys
import time
import traceback


def _protocol_streams():
    """Keep the real stdout for replies; send everything printed (by us or the package) to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return sys.stdin.buffer, out


class Worker:
    def __init__(self) -> None:
        self.session = None
        self.buffer = None
        self.threads = 1
        self.model = None

    # --- commands -----------------------------------------------------------------------------

    def init(self, model_folder: str, fold=0, threads: int = 1) -> dict:
        import nnInteractive
        import torch
        from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

        self.threads = int(threads)
        torch.set_num_threads(self.threads)
        self.model = (model_folder, fold)
        self.session = nnInteractiveInferenceSession(
            device=torch.device("cpu"),
            use_torch_compile=False,
            verbose=False,
            torch_n_threads=self.threads,
            do_autozoom=True,
        )
        t0 = time.perf_counter()
        self.session.initialize_from_trained_model_folder(model_folder, use_fold=fold)
        from importlib.metadata import version

        return {
            "seconds": time.perf_counter() - t0,
            "version": version("nninteractive"),
            "torch": torch.__version__,
            "module": nnInteractive.__file__,
            "patch_size": list(self.session.configuration_manager.patch_size),
        }

    def image(self, image) -> dict:
        import numpy as np

        self.session.set_image(np.asarray(image)[None])
        self.buffer = np.zeros(image.shape, np.uint8)
        self.session.set_target_buffer(self.buffer)
        return {}

    def step(self, op: str, seed: int, **kw) -> dict:

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            reply = self._step(op, seed, **kw)
        text = buf.getvalue()
        sys.stderr.write(text)
        zooms = [float(z) for z in re.findall(r"(?:at|AutoZoom) zoom out factor ([0-9.]+)", text)]
        boxes = re.findall(r"with (\d+) bounding boxes", text)
        reply["zoom"] = max(zooms) if zooms else None
        if re.search(r"max zoom out factor ([0-9.]+)", text):
            reply["zoom"] = float(re.findall(r"max zoom out factor ([0-9.]+)", text)[-1])
        reply["boxes"] = int(boxes[-1]) if boxes else (0 if zooms else None)
        return reply

    def _step(self, op: str, seed: int, **kw) -> dict:
        import numpy as np

        s = self.session
        np.random.seed(seed)
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = None
        bbox = None
        if op == "point":
            bbox = s.add_point_interaction(list(kw["zyx"]), include_interaction=kw["positive"])
        elif op == "box":
            bbox = s.add_bbox_interaction(
                [list(x) for x in zip(kw["lo"], kw["hi"])],
                include_interaction=kw["positive"],
                run_prediction=kw.get("predict", True),
            )
        elif op in ("scribble", "lasso"):
            mask = np.ascontiguousarray(kw["mask"], dtype=np.uint8)
            ibox = [[int(a), int(a) + int(n)] for a, n in zip(kw["lo"], mask.shape)]
            add = s.add_scribble_interaction if op == "scribble" else s.add_lasso_interaction
            bbox = add(
                mask, include_interaction=kw["positive"], interaction_bbox=ibox, run_prediction=kw.get("predict", True)
            )
        elif op == "initial":
            bbox = s.add_initial_seg_interaction(
                np.ascontiguousarray(kw["mask"], dtype=np.uint8), run_prediction=kw["predict"]
            )
        elif op == "undo":
            result = bool(s.undo())
            bbox = s._clipped_last_paste_bbox() if result else None  # the restored region (diff bbox)
        elif op == "reset":
            s.reset_interactions()
        else:
            raise ValueError(f"unknown op {op!r}")
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        bbox = None if bbox is None else [[int(a), int(b)] for a, b in bbox]
        return {"bbox": bbox, "seconds": seconds, "cpu": cpu, "buffer": self.buffer.copy(), "result": result}


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    inp, out = _protocol_streams()
    worker = Worker()
    while True:
        try:
            command, payload = pickle.load(inp)
        except EOFError:
            return
        if command == "peak_rss":
            pickle.dump({"ok": True, "bytes": peak_rss_bytes()}, out, protocol=4)
            out.flush()
            continue
        if command == "quit":
            pickle.dump({"ok": True}, out, protocol=4)
            out.flush()
            return
        try:
            reply = {"ok": True, **getattr(worker, command)(**payload)}
        except Exception as e:  # reported to compare.py, which decides
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        pickle.dump(reply, out, protocol=4)
        out.flush()


if __name__ == "__main__":
    main()
