"""nnint's nnU-Net U-Net: state-dict layout, shapes, forward behaviour, plans validation.

Equality with nnU-Net's own implementation is checked by scripts/compat/check_network.py (needs the
official venv); these tests pin the key layout that makes official checkpoints load.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch

from nnint.backends.torch.architectures import official_v1_architecture, small_architecture
from nnint.backends.torch.network import build_network, initialize_weights
from nnint.errors import CheckpointError


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_network(small_architecture(), 8, 2).eval()


def test_small_state_dict_has_nnunet_aliases(small):
    sd = small.state_dict()
    assert len(sd) == 312
    # conv blocks register their modules twice, the decoder re-registers the encoder
    assert "encoder.stem.convs.0.conv.weight" in sd and "encoder.stem.convs.0.all_modules.0.weight" in sd
    assert "encoder.stem.convs.0.norm.weight" in sd and "encoder.stem.convs.0.all_modules.1.weight" in sd
    assert "decoder.encoder.stages.3.blocks.1.conv2.norm.bias" in sd
    assert {k for k in sd if k.startswith("decoder.encoder.")} == {
        "decoder." + k for k in sd if k.startswith("encoder.")
    }
    # all deep-supervision heads exist, one per decoder stage
    assert [k for k in sd if k.startswith("decoder.seg_layers") and k.endswith("weight")] == [
        f"decoder.seg_layers.{i}.weight" for i in range(3)
    ]
    # strided residual blocks: avg-pool (no params) then a bias-free 1x1 projection with norm
    assert sd["encoder.stages.1.blocks.0.skip.1.conv.weight"].shape == (16, 8, 1, 1, 1)
    assert "encoder.stages.1.blocks.0.skip.1.conv.bias" not in sd
    assert not any(k.startswith("encoder.stages.0.blocks.0.skip") for k in sd)  # identity skip: no module
    assert sd["decoder.transpconvs.0.weight"].shape == (64, 32, 2, 2, 2)
    assert sd["decoder.stages.0.convs.0.conv.weight"].shape == (32, 64, 3, 3, 3)
    # aliases share storage (the checkpoint stores them once)
    assert (
        sd["encoder.stem.convs.0.conv.weight"].data_ptr()
        == sd["decoder.encoder.stem.convs.0.all_modules.0.weight"].data_ptr()
    )


def test_forward_shape_and_dtype(small):
    x = torch.randn(2, 8, 16, 24, 8)
    with torch.no_grad():
        y = small(x)
    assert y.shape == (2, 2, 16, 24, 8) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_forward_does_not_modify_input(small):
    x = torch.randn(1, 8, 16, 16, 16)
    x0 = x.clone()
    with torch.no_grad():
        small(x)
    assert torch.equal(x, x0)


def test_channels_last_matches_contiguous():
    net = build_network(small_architecture(), 8, 2).eval()
    x = torch.randn(1, 8, 16, 16, 16)
    with torch.no_grad():
        a = net(x)
        net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last_3d)
        b = net_cl(x.to(memory_format=torch.channels_last_3d))
    assert torch.allclose(a, b, atol=1e-5)


def test_deep_supervision_heads(small):
    with torch.no_grad():
        x = torch.randn(1, 8, 16, 16, 16)
        outs = small.forward_deep_supervision(x)
        full = small(x)
    assert [o.shape[2:] for o in outs] == [(16, 16, 16), (8, 8, 8), (4, 4, 4)]
    assert torch.allclose(outs[0], full)


def test_training_backward_works():
    net = build_network(small_architecture(), 8, 2).train()
    y = net(torch.randn(2, 8, 16, 16, 16))
    y.mean().backward()
    assert net.encoder.stem.convs[0].conv.weight.grad is not None


def test_initialize_weights_zeroes_last_norm_of_residual_blocks():
    net = initialize_weights(build_network(small_architecture(), 8, 2))
    sd = net.state_dict()
    assert torch.count_nonzero(sd["encoder.stages.2.blocks.1.conv2.norm.weight"]) == 0
    assert torch.count_nonzero(sd["encoder.stem.convs.0.conv.bias"]) == 0
    assert sd["encoder.stem.convs.0.conv.weight"].std() > 0


def test_2d_network():
    arch = copy.deepcopy(small_architecture())
    kw = arch["arch_kwargs"]
    kw.update(
        conv_op="torch.nn.modules.conv.Conv2d",
        norm_op="torch.nn.modules.instancenorm.InstanceNorm2d",
        kernel_sizes=[[3, 3]] * 4,
        strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
    )
    net = build_network(arch, 1, 3)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 24)).shape == (1, 3, 32, 24)


def test_plain_conv_unet_keys():
    arch = copy.deepcopy(small_architecture())
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    kw = arch["arch_kwargs"]
    kw["n_conv_per_stage"] = kw.pop("n_blocks_per_stage")
    sd = build_network(arch, 2, 2).state_dict()
    assert "encoder.stages.0.0.convs.0.conv.weight" in sd and "decoder.encoder.stages.3.0.convs.1.norm.weight" in sd


def test_official_v1_architecture_size():
    t = time.perf_counter()
    with torch.device("meta"):  # no memory, no init cost: just the module tree
        net = build_network(official_v1_architecture(), 8, 2)
    assert time.perf_counter() - t < 5
    assert sum(p.numel() for p in net.parameters()) == 102_355_818
    sd = net.state_dict()
    assert len(sd) == 956
    assert sd["encoder.stem.convs.0.conv.weight"].shape == (32, 8, 3, 3, 3)
    assert sd["decoder.seg_layers.4.weight"].shape == (2, 32, 1, 1, 1)
    assert sd["decoder.transpconvs.0.weight"].shape == (320, 320, 2, 2, 2)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualUNet"},
            "architecture.network_class_name",
        ),
        ({"conv_op": "torch.nn.modules.conv.Conv1d"}, "architecture.arch_kwargs.conv_op"),
        ({"conv_op": "os.system"}, "architecture.arch_kwargs.conv_op"),
        ({"norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d"}, "architecture.arch_kwargs.norm_op"),
        ({"nonlin": "torch.nn.Softmax"}, "architecture.arch_kwargs.nonlin"),
        ({"features_per_stage": [8, 16]}, "architecture.arch_kwargs.features_per_stage"),
        ({"strides": [[1, 1, 1], [2, 2], [2, 2, 2], [2, 2, 2]]}, "architecture.arch_kwargs.strides"),
        ({"squeeze_excitation": True}, "architecture.arch_kwargs.squeeze_excitation"),
        ({"block": "BottleneckD"}, "architecture.arch_kwargs.block"),
        ({"n_stages": None}, "architecture.arch_kwargs.n_stages"),
    ],
)
def test_unsupported_plans_raise_checkpoint_error(change, key):
    arch = copy.deepcopy(small_architecture())
    if "network_class_name" in change:
        arch.update(change)
    else:
        arch["arch_kwargs"].update(change)
    with pytest.raises(CheckpointError) as e:
        build_network(arch, 8, 2)
    assert e.value.file == "plans.json" and e.value.key == key


def test_missing_arch_kwargs_key():
    arch = copy.deepcopy(small_architecture())
    del arch["arch_kwargs"]["n_blocks_per_stage"]
    with pytest.raises(CheckpointError) as e:
        build_network(arch, 8, 2)
    assert e.value.key == "architecture.arch_kwargs.n_blocks_per_stage"


# --- nnint's window-rank input channel ---------------------------------------------------------


def _ranked_arch() -> dict:
    from nnint.backends.torch.network import WINDOW_RANK_KEY

    arch = small_architecture()
    arch["arch_kwargs"][WINDOW_RANK_KEY] = True
    return arch


def test_window_rank_adds_one_stem_input_channel_and_no_state_dict_keys():
    plain, ranked = build_network(small_architecture(), 8, 2), build_network(_ranked_arch(), 8, 2)
    assert set(plain.state_dict()) == set(ranked.state_dict())
    assert ranked.encoder.stem.convs[0].conv.weight.shape[1] == 9
    with torch.no_grad():
        assert ranked.eval()(torch.randn(1, 8, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


def test_window_rank_values_follow_the_intensity_order_whatever_the_scale():
    from nnint.backends.torch.network import WindowRank

    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 1, 16, 16, 16, generator=g)
    # CT-like: a quarter of the window is air far below, the rest differs by small amounts
    img[..., :4] = -20.0
    x = torch.cat([img, torch.zeros(1, 7, 16, 16, 16)], 1)
    out = WindowRank()(x)
    assert out.shape == (1, 9, 16, 16, 16) and torch.equal(out[:, :8], x)
    rank = out[0, 8]
    assert rank.min() >= -1 and rank.max() <= 1
    assert torch.allclose(rank[..., :4], rank[0, 0, 0])  # one value for the air
    tissue, r = img[0, 0, ..., 4:].flatten(), rank[..., 4:].flatten()
    order = torch.argsort(tissue)
    assert (r[order].diff() >= 0).all()  # monotone in the intensity
    assert r.max() - r.min() > 1.2  # faint differences (SD 1 next to -20) spread over most of the range
    # invariant to the global normalisation (any positive scale and shift of the image)
    x2 = x.clone()
    x2[:, 0] = x[:, 0] * 37.0 + 5.0
    torch.testing.assert_close(WindowRank()(x2)[:, 8], out[:, 8])
    # a constant window has no order: zero
    assert torch.equal(WindowRank()(torch.ones(2, 8, 8, 8, 8))[:, 8], torch.zeros(2, 8, 8, 8))


def test_window_rank_key_must_be_a_bool():
    from nnint.backends.torch.network import WINDOW_RANK_KEY

    arch = small_architecture()
    arch["arch_kwargs"][WINDOW_RANK_KEY] = "yes"
    with pytest.raises(CheckpointError, match=WINDOW_RANK_KEY):
        build_network(arch, 8, 2)


# --- nnint's prompt-likeness input channels ----------------------------------------------------


def test_prompt_likeness_marks_what_is_alike_to_each_prompt_kind():
    from nnint.backends.torch.network import PROMPT_LIKENESS_KEY, PromptLikeness

    g = torch.Generator().manual_seed(0)
    img = 0.01 * torch.randn(1, 1, 16, 16, 16, generator=g)
    img[..., 4:8, 4:8, 4:8] += 3.0  # a bright cube (noise well under the 0.05 floor of the width)
    x = torch.cat([img, torch.zeros(1, 7, 16, 16, 16)], 1)
    x[0, 4, 5:7, 5:7, 5:7] = 1.0  # a positive click in the cube
    x[0, 5, 12:14, 12:14, 12:14] = 0.98  # a negative click in the background (decayed)
    x[0, 2, 6:16, 6:16, 6:16] = 1.0  # a box overlapping the cube, but its middle third is background
    out = PromptLikeness()(x)  # no rank: compares the image channel
    assert out.shape == (1, 12, 16, 16, 16) and torch.equal(out[:, :8], x)
    pos, neg, box, prev = out[0, 8:]
    cube = torch.zeros(16, 16, 16, dtype=torch.bool)
    cube[4:8, 4:8, 4:8] = True
    assert pos[cube].min() > 0.3 and pos[~cube].max() < 1e-3
    assert neg[~cube].mean() > 0.3 and neg[cube].max() < 1e-3
    assert box[~cube].mean() > 0.3 and box[cube].max() < 1e-3  # the box's middle is background here
    assert torch.equal(prev, torch.zeros_like(prev))  # no previous mask, no seed: zeros
    # the network computes the rank first and compares ranks when it has the window-rank channel
    arch = _ranked_arch()
    arch["arch_kwargs"][PROMPT_LIKENESS_KEY] = True
    net = build_network(arch, 8, 2).eval()
    assert net.encoder.stem.convs[0].conv.weight.shape[1] == 13
    assert set(net.state_dict()) == set(build_network(small_architecture(), 8, 2).state_dict())
    with torch.no_grad():
        assert net(x).shape == (1, 2, 16, 16, 16)
        ranked = net._input(x)
    assert ranked.shape[1] == 13 and ranked[0, 9][cube].min() > 0.3


def test_prompt_likeness_key_must_be_a_bool():
    from nnint.backends.torch.network import PROMPT_LIKENESS_KEY

    arch = small_architecture()
    arch["arch_kwargs"][PROMPT_LIKENESS_KEY] = 1
    with pytest.raises(CheckpointError, match=PROMPT_LIKENESS_KEY):
        build_network(arch, 8, 2)
