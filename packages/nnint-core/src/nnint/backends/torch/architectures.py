"""Ready-made nnU-Net v2 plans for the official nnInteractive v1.0 network and a tiny test variant.

Used by tests, the training pipeline and the compatibility harness to create model folders with
seeded weights (see :func:`nnint.backends.torch.checkpoint.write_model_folder`). The official plans
file itself is not public; the architecture is the one documented in reference-behaviour.md §2.6
(102,355,818 parameters with 8 inputs / 2 outputs). Everything outside ``architecture`` is a
plausible nnU-Net v2 plans body: the nnInteractive session ignores it (no resampling, its own
normalisation), but nnU-Net's ``PlansManager`` expects the keys to exist.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

OFFICIAL_V1_DATASET_NAME = "Dataset225_nnInteractiveV2"
OFFICIAL_V1_PLANS_NAME = "nnUNetResEncUNetLPlans_noResampling"
OFFICIAL_V1_CONFIGURATION = "3d_fullres_ps192_bs24"
SMALL_CONFIGURATION = "3d_fullres"

RESENC_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def resenc_architecture(
    features: Sequence[int],
    n_blocks: Sequence[int],
    *,
    strides: Sequence[int] | None = None,
    kernel: int = 3,
    n_conv_decoder: int = 1,
) -> dict:
    """A 3-D ``ResidualEncoderUNet`` ``architecture`` entry (InstanceNorm eps 1e-5 affine,
    LeakyReLU inplace, conv bias, no dropout). ``strides`` default: 1 then 2 in every later stage."""
    n = len(features)
    if len(n_blocks) != n:
        raise ValueError("features and n_blocks need one entry per stage")
    strides = [1] + [2] * (n - 1) if strides is None else list(strides)
    return {
        "network_class_name": RESENC_CLASS,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[kernel] * 3 for _ in range(n)],
            "strides": [[s] * 3 for s in strides],
            "n_blocks_per_stage": list(n_blocks),
            "n_conv_per_stage_decoder": [n_conv_decoder] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _configuration(architecture: dict, patch_size: Sequence[int], batch_size: int, plans_name: str) -> dict:
    """A complete nnU-Net v2 3-D configuration around ``architecture`` (1 image channel, no resampling)."""
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "data_identifier": f"{plans_name}_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size,
        "patch_size": list(patch_size),
        "median_image_size_in_voxels": list(patch_size),
        "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resample,
        "resampling_fn_seg_kwargs": {**resample, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resample, "order": 1},
        "architecture": copy.deepcopy(architecture),
        "batch_dice": True,
    }


def make_plans(
    architecture: dict,
    *,
    configuration: str,
    patch_size: Sequence[int],
    batch_size: int = 2,
    dataset_name: str = "Dataset999_nnint",
    plans_name: str = "nnintPlans",
    base_configuration: str | None = "3d_fullres",
) -> dict:
    """nnU-Net v2 plans with one usable configuration ``configuration``.

    When ``base_configuration`` differs from ``configuration``, the full body lives in the base and
    ``configuration`` only ``inherits_from`` it, overriding patch and batch size: that is how nnU-Net
    custom configurations (such as ``3d_fullres_ps192_bs24``) are usually written, and it exercises
    ``inherits_from`` resolution in every loader.
    """
    plans = {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {},
        "experiment_planner_used": "nnUNetPlannerResEncL",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1.0,
                "mean": 0.0,
                "median": 0.0,
                "min": -1.0,
                "percentile_00_5": -1.0,
                "percentile_99_5": 1.0,
                "std": 1.0,
            }
        },
    }
    if base_configuration is None or base_configuration == configuration:
        plans["configurations"][configuration] = _configuration(architecture, patch_size, batch_size, plans_name)
    else:
        plans["configurations"][base_configuration] = _configuration(architecture, patch_size, 2, plans_name)
        plans["configurations"][configuration] = {
            "inherits_from": base_configuration,
            "patch_size": list(patch_size),
            "batch_size": batch_size,
        }
    return plans


def official_v1_architecture() -> dict:
    """ResEnc-L of nnInteractive v1.0: 6 stages 32-64-128-256-320-320, blocks 1-3-4-6-6-6."""
    return resenc_architecture([32, 64, 128, 256, 320, 320], [1, 3, 4, 6, 6, 6])


def official_v1_plans() -> dict:
    """Plans equivalent to the official v1.0 ones (configuration ``3d_fullres_ps192_bs24``, patch 192³).

    Use with 1 image channel, 7 interaction channels and 2 classes (8 network inputs).
    """
    return make_plans(
        official_v1_architecture(),
        configuration=OFFICIAL_V1_CONFIGURATION,
        patch_size=(192, 192, 192),
        batch_size=24,
        dataset_name=OFFICIAL_V1_DATASET_NAME,
        plans_name=OFFICIAL_V1_PLANS_NAME,
    )


def small_architecture() -> dict:
    """A tiny ResEnc U-Net (4 stages 8-16-32-64, blocks 1-2-2-2; 611,966 parameters with 8 in / 2 out) for tests."""
    return resenc_architecture([8, 16, 32, 64], [1, 2, 2, 2])


def small_plans(patch_size: int = 64) -> dict:
    """Plans for :func:`small_architecture`, single configuration ``3d_fullres``, patch ``patch_size``³."""
    return make_plans(
        small_architecture(),
        configuration=SMALL_CONFIGURATION,
        patch_size=(patch_size,) * 3,
        dataset_name="Dataset999_nnintSmall",
        plans_name="nnintSmallPlans",
        base_configuration=None,
    )


def default_dataset_json(num_image_channels: int = 1) -> dict:
    """A minimal nnU-Net v2 ``dataset.json``: image channels, binary labels."""
    return {
        "channel_names": {
            str(i): ("image" if num_image_channels == 1 else f"image{i}") for i in range(num_image_channels)
        },
        "labels": {"background": 0, "foreground": 1},
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }
