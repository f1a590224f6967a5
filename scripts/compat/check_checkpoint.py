"""Check that the official nnInteractive session loads model folders written by nnint, and that
nnint reads them (and the official v1.0-style legacy metadata) the same way.

    PYTHONPATH=packages/nnint-core/src /work/venvs/official/bin/python scripts/compat/check_checkpoint.py [--skip-official-size]

For each folder: write it with ``write_model_folder`` (seeded weights), load it with
``nnInteractiveInferenceSession.initialize_from_trained_model_folder`` and with
``load_model_folder``, then compare license, decay, point radius, scribble thickness, pad mode,
supported interactions, channel mapping, channel count, the weights and the network outputs.
The small folder also runs one real point prediction through the official session.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from nnint.backends.torch.architectures import (
    OFFICIAL_V1_CONFIGURATION,
    SMALL_CONFIGURATION,
    official_v1_plans,
    small_plans,
)
from nnint.backends.torch.checkpoint import default_inference_info, load_model_folder, write_model_folder
from nnint.backends.torch.network import build_network


def seeded_weights(plans: dict, cfg: str, n_in: int, seed: int) -> dict:
    torch.manual_seed(seed)
    arch = plans["configurations"][cfg].get("architecture") or plans["configurations"]["3d_fullres"]["architecture"]
    net = build_network(arch, n_in, 2)
    with torch.no_grad():  # non-trivial norm parameters
        for p in net.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return net.state_dict()


def official_load(folder: Path, use_fold):
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    s = nnInteractiveInferenceSession(device=torch.device("cpu"), use_torch_compile=False, torch_n_threads=2)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the licence banner
        s.initialize_from_trained_model_folder(str(folder), use_fold=use_fold)
    return s


def compare(name: str, folder: Path, use_fold=0, shape=(1, 8, 32, 32, 32), predict=False) -> bool:
    off = official_load(folder, use_fold)
    ours = load_model_folder(folder, use_fold=use_fold)
    checks = {
        "license": (off.license, ours.license),
        "interaction_decay": (float(off.interaction_decay), ours.interaction_decay),
        "point_radius": (off.point_interaction.point_radius, ours.point_radius),
        "preferred_scribble_thickness": (
            tuple(float(t) for t in off.preferred_scribble_thickness),
            ours.preferred_scribble_thickness,
        ),
        "pad_mode_image": (off.pad_mode_data, ours.pad_mode_image),
        "supported_interactions": (off.supported_interactions, ours.supported_interactions),
        "supports_initial_label": (off.supports_initial_label, ours.supports_initial_label),
        "channel_mapping": (
            {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in off.channel_mapping.items()},
            ours.channel_mapping,
        ),
        "num_interaction_channels": (off.num_interaction_channels, ours.num_interaction_channels),
        "trainer_name": (off.trainer_name, ours.trainer_name),
        "patch_size": (tuple(off.configuration_manager.patch_size), ours.patch_size),
    }
    bad = {k: v for k, v in checks.items() if v[0] != v[1]}
    net = ours.build_network("cpu")
    osd, nsd = off.network.state_dict(), net.state_dict()
    same_w = list(osd) == list(nsd) and all(torch.equal(osd[k], nsd[k]) for k in osd)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (off.network(x) - net(x)).abs().max().item()
    msg = ""
    if predict:  # a real interaction through the official session on a folder nnint wrote
        img = np.random.default_rng(0).normal(size=(1, 40, 48, 56)).astype(np.float32)
        target = np.zeros(img.shape[1:], np.uint8)
        off.set_image(img)
        off.set_target_buffer(target)
        with contextlib.redirect_stdout(io.StringIO()):
            off.add_point_interaction((20, 24, 28), include_interaction=True)
        msg = f", official point prediction ran (foreground voxels {int(target.sum())})"
    ok = not bad and same_w and diff < 1e-4
    print(
        f"{'OK  ' if ok else 'FAIL'} {name}: official session loaded it; license {ours.license!r}, decay "
        f"{ours.interaction_decay}, channels {ours.num_interaction_channels}, identical weights {same_w}, "
        f"max|logit diff| {diff:.2e}{msg}"
    )
    for k, (a, b) in bad.items():
        print(f"     mismatch {k}: official {a!r} vs nnint {b!r}")
    return ok


def main() -> int:
    torch.set_num_threads(2)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sp = small_plans()
        w = seeded_weights(sp, SMALL_CONFIGURATION, 8, 0)
        write_model_folder(
            tmp / "small",
            plans=sp,
            configuration=SMALL_CONFIGURATION,
            network_weights=w,
            license_text="Apache-2.0\nhttps://www.apache.org/licenses/LICENSE-2.0\n",
        )
        results.append(compare("small, inference_info.json, LICENSE", tmp / "small", predict=True))
        results.append(compare("small, use_fold=None", tmp / "small", use_fold=None))

        write_model_folder(
            tmp / "legacy_str",
            plans=sp,
            configuration=SMALL_CONFIGURATION,
            network_weights=w,
            legacy_metadata="nnInteractiveInferenceSession",
            fold="all",
        )
        results.append(compare("small, legacy string metadata, fold_all", tmp / "legacy_str", use_fold="all"))

        # a 5-channel model: prev_seg last via a negative index, points only, no boxes/lasso
        info = default_inference_info(
            interaction_channels=4,
            interaction_decay=0.95,
            point_radius=3,
            preferred_scribble_thickness=1,
            supported_interactions={"bbox2d": False, "lasso": False, "scribble": True},
            channel_mapping={
                "prev_seg": -1,
                "points": [0, 1],
                "scribble": [-3, -2],
                "bbox2d": [0, 1],
                "bbox3d": [0, 1],
                "lasso": [0, 1],
            },
        )
        w6 = seeded_weights(sp, SMALL_CONFIGURATION, 6, 1)
        write_model_folder(
            tmp / "custom", plans=sp, configuration=SMALL_CONFIGURATION, network_weights=w6, inference_info=info
        )
        results.append(
            compare("small, custom capability (negative indices, 5 channels)", tmp / "custom", shape=(1, 6, 32, 32, 32))
        )

        if "--skip-official-size" not in sys.argv:
            op = official_v1_plans()
            wo = seeded_weights(op, OFFICIAL_V1_CONFIGURATION, 8, 2)
            v1_meta = {
                "inference_class": "nnInteractiveInferenceSession",
                "point_radius": 4,
                "preferred_scribble_thickness": 2,
            }
            write_model_folder(
                tmp / "v1",
                plans=op,
                configuration=OFFICIAL_V1_CONFIGURATION,
                network_weights=wo,
                legacy_metadata=v1_meta,
            )
            size = (tmp / "v1" / "fold_0" / "checkpoint_final.pth").stat().st_size
            print(f"     official-size checkpoint: {size:,} bytes (official release: 411,387,150)")
            results.append(
                compare(
                    "official v1.0 architecture, legacy object metadata, no LICENSE",
                    tmp / "v1",
                    shape=(1, 8, 64, 64, 64),
                )
            )
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
