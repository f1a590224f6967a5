"""Compare nnint's U-Net with nnU-Net's reference implementation (dynamic_network_architectures).

Run with the official venv's python and our source on the path:

    PYTHONPATH=packages/nnint-core/src /work/venvs/official/bin/python scripts/compat/check_network.py

For each architecture: identical ordered ``state_dict`` keys and shapes, ``strict=True`` loading of the
reference's seeded weights into ours, and max |logit difference| on a seeded random input
(float32 CPU). Also prints the parameter count of the official v1.0 architecture (doc: 102,355,818).
The reference package is used only here, for verification.
"""

from __future__ import annotations

import copy
import pydoc
import sys
import time

import torch

from nnint.backends.torch.architectures import official_v1_architecture, small_architecture
from nnint.backends.torch.network import build_network


def reference(arch: dict, c_in: int, n_cls: int) -> torch.nn.Module:
    """Instantiate the reference exactly like nnU-Net's get_network_from_plans (without its code)."""
    kw = copy.deepcopy(arch["arch_kwargs"])
    for k in arch["_kw_requires_import"]:
        if kw.get(k) is not None:
            kw[k] = pydoc.locate(kw[k])
    cls = pydoc.locate(arch["network_class_name"])
    return cls(input_channels=c_in, num_classes=n_cls, deep_supervision=False, **kw)


def seed_weights(net: torch.nn.Module, seed: int) -> None:
    """Random but well-scaled weights, so norms/biases are not at their trivial defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel() if "transpconv" not in name else p.shape[0] * p[0, 0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def variant(base: dict, **changes) -> dict:
    arch = copy.deepcopy(base)
    arch["arch_kwargs"].update(changes)
    return arch


def check(name: str, arch: dict, c_in: int, n_cls: int, shape: tuple[int, ...]) -> bool:
    ref = reference(arch, c_in, n_cls)
    ours = build_network(arch, c_in, n_cls)
    rsd, osd = ref.state_dict(), ours.state_dict()
    same_keys = list(rsd) == list(osd)
    same_shapes = same_keys and all(rsd[k].shape == osd[k].shape for k in rsd)
    if not same_keys:
        print(f"  only in reference: {sorted(set(rsd) - set(osd))[:8]}")
        print(f"  only in ours:      {sorted(set(osd) - set(rsd))[:8]}")
    seed_weights(ref, 0)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn((1, c_in, *shape), generator=torch.Generator().manual_seed(1))
    ref.eval(), ours.eval()  # no-op for InstanceNorm/no dropout; needed for BatchNorm/dropout variants
    with torch.no_grad():
        t = time.perf_counter()
        a = ref(x)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        b = ours(x.clone())
        t_ours = time.perf_counter() - t
    diff = (a - b).abs().max().item()
    n_par = sum(p.numel() for p in ours.parameters())
    ok = same_keys and same_shapes and a.shape == b.shape and diff < 1e-4
    print(
        f"{'OK  ' if ok else 'FAIL'} {name}: keys {len(osd)} (same order: {same_keys}, shapes: {same_shapes}), "
        f"params {n_par:,}, out {tuple(b.shape)}, max|diff| {diff:.3e}, t ref {t_ref:.2f}s ours {t_ours:.2f}s"
    )
    return ok


def extra_checks(small: dict) -> bool:
    """channels_last_3d forward, deep-supervision heads, and nnU-Net-style initialisation."""
    from nnint.backends.torch.network import initialize_weights

    ref, ours = reference(small, 8, 2), build_network(small, 8, 2)
    seed_weights(ref, 3)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn((2, 8, 32, 32, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = ref(x)
        cl = ours.to(memory_format=torch.channels_last_3d)(x.to(memory_format=torch.channels_last_3d))
        d_cl = (a - cl).abs().max().item()
        ref.decoder.deep_supervision = True
        ds_ref = ref(x)
        ds_ours = ours.forward_deep_supervision(x)
    d_ds = max((p - q).abs().max().item() for p, q in zip(ds_ref, ds_ours))
    shapes_ok = [t.shape for t in ds_ref] == [t.shape for t in ds_ours]
    ref, ours = reference(small, 8, 2), build_network(small, 8, 2)  # fresh, contiguous parameters
    torch.manual_seed(5)
    ref.apply(ref.initialize)
    torch.manual_seed(5)
    initialize_weights(ours)
    d_init = max((p - q).abs().max().item() for p, q in zip(ref.state_dict().values(), ours.state_dict().values()))
    ok = d_cl < 1e-4 and d_ds < 1e-4 and shapes_ok and d_init == 0
    print(
        f"{'OK  ' if ok else 'FAIL'} extras: channels_last_3d max|diff| {d_cl:.3e} (output channels_last: "
        f"{cl.is_contiguous(memory_format=torch.channels_last_3d)}), deep supervision {len(ds_ours)} heads "
        f"max|diff| {d_ds:.3e}, same-seed init max|diff| {d_init:.3e}"
    )
    return ok


def main() -> int:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    off = official_v1_architecture()
    small = small_architecture()
    k = small["arch_kwargs"]
    plain = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {kk: v for kk, v in k.items() if kk != "n_blocks_per_stage"}
        | {"n_conv_per_stage": [2, 2, 2, 2]},
        "_kw_requires_import": small["_kw_requires_import"],
    }
    two_d = variant(
        small,
        conv_op="torch.nn.modules.conv.Conv2d",
        norm_op="torch.nn.modules.instancenorm.InstanceNorm2d",
        kernel_sizes=[[3, 3]] * 4,
        strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
    )
    results = [
        check("small ResidualEncoderUNet", small, 8, 2, (32, 32, 32)),
        check(
            "small, anisotropic strides/kernels",
            variant(
                small,
                kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                n_blocks_per_stage=[2, 1, 2, 1],
                n_conv_per_stage_decoder=[2, 1, 2],
            ),
            3,
            4,
            (16, 32, 24),
        ),
        check(
            "small, dropout + BatchNorm + ReLU",
            variant(
                small,
                dropout_op="torch.nn.modules.dropout.Dropout3d",
                dropout_op_kwargs={"p": 0.2},
                norm_op="torch.nn.modules.batchnorm.BatchNorm3d",
                norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin="torch.nn.ReLU",
                nonlin_kwargs={"inplace": True},
                conv_bias=False,
            ),
            8,
            2,
            (32, 32, 32),
        ),
        check("small, 2D", two_d, 1, 3, (64, 48)),
        check("small PlainConvUNet", plain, 2, 2, (32, 32, 32)),
        check(
            "small PlainConvUNet, nonlin_first + dropout",
            variant(
                plain, nonlin_first=True, dropout_op="torch.nn.modules.dropout.Dropout3d", dropout_op_kwargs={"p": 0.1}
            ),
            2,
            2,
            (32, 32, 32),
        ),
        check(
            "small, stem_channels 4 + int broadcasts",
            variant(small, stem_channels=4, n_blocks_per_stage=2, n_conv_per_stage_decoder=2, kernel_sizes=3),
            8,
            2,
            (32, 32, 32),
        ),
        check("official v1.0 (64^3 input)", off, 8, 2, (64, 64, 64)),
    ]
    results += [extra_checks(small)]
    ours = build_network(off, 8, 2)
    n = sum(p.numel() for p in ours.parameters())
    print(f"official v1.0 parameters: {n:,} (expected 102,355,818) -> {'OK' if n == 102_355_818 else 'MISMATCH'}")
    return 0 if all(results) and n == 102_355_818 else 1


if __name__ == "__main__":
    sys.exit(main())
