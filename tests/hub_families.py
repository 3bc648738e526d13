"""Tiny random-weight networks of every keras-hub vision family, for offline tests (32×32 inputs, a second to build).

`FAMILIES[name]()` returns a keras-hub backbone (the image tower for CLIP and
SigLIP); `TAP_SHAPES[name]` is what keras_l2t must tap from it at 32×32
(DINOv2: 28×28, its patch being 14) and `TRANSFER_TAPS[name]` which taps pairs
use by default.
"""

IMAGE_SHAPE = (32, 32, 3)


def _hub():
    import keras_hub  # pylint: disable=import-outside-toplevel

    return keras_hub.models


def resnet():
    return _hub().ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 8, 8, 8],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=IMAGE_SHAPE,
    )


def efficientnet():
    return _hub().EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 5, stackwise_depth_coefficients=[1.0] * 5,
        stackwise_kernel_sizes=[3] * 5, stackwise_num_repeats=[1] * 5,
        stackwise_input_filters=[8, 8, 8, 16, 16], stackwise_output_filters=[8, 8, 16, 16, 16],
        stackwise_expansion_ratios=[1, 2, 2, 2, 2], stackwise_squeeze_and_excite_ratios=[0.25] * 5,
        stackwise_strides=[1, 2, 2, 2, 2], stackwise_block_types=["v1"] * 5, input_shape=IMAGE_SHAPE,
    )  # num_features stays 1280: keras-hub 0.32 leaves it out of the saved config


def mobilenet():
    return _hub().MobileNetBackbone(
        stackwise_expansion=[[16], [24], [32]], stackwise_num_blocks=[1, 1, 1],
        stackwise_num_filters=[[8], [16], [16]], stackwise_kernel_size=[[3], [3], [3]],
        stackwise_num_strides=[[2], [2], [2]], stackwise_se_ratio=[[None], [0.25], [0.25]],
        stackwise_activation=[["relu"], ["hard_swish"], ["hard_swish"]], stackwise_padding=[[1], [1], [1]],
        output_num_filters=32, depthwise_filters=8, depthwise_stride=2, depthwise_residual=False,
        last_layer_filter=32, squeeze_and_excite=0.5, input_num_filters=8, input_activation="hard_swish",
        output_activation="hard_swish", image_shape=IMAGE_SHAPE,
    )


def cspnet():
    return _hub().CSPNetBackbone(
        stem_filters=8, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1, 1, 1], stackwise_strides=2,
        stackwise_num_filters=[8, 16, 16, 32], stage_type="csp", block_type="bottleneck_block", expand_ratio=2.0,
        block_ratio=1.0, bottle_ratio=0.5, image_shape=IMAGE_SHAPE,
    )


def hgnetv2():
    return _hub().HGNetV2Backbone(
        depths=[1, 1, 1, 1], embedding_size=16, hidden_sizes=[16, 16, 32, 32], stem_channels=[3, 8, 16],
        hidden_act="relu", use_learnable_affine_block=False,
        stackwise_stage_filters=[(16, 8, 16, 1, 1, 3), (16, 8, 16, 1, 1, 3), (16, 16, 32, 1, 1, 3),
                                 (32, 16, 32, 1, 1, 3)],
        apply_downsample=[False, True, True, True], use_lightweight_conv_block=[False] * 4, image_shape=IMAGE_SHAPE,
    )


def densenet():
    return _hub().DenseNetBackbone(
        stackwise_num_repeats=[1, 1, 1, 1], growth_rate=8, compression_ratio=0.5, image_shape=IMAGE_SHAPE
    )


def vgg():
    return _hub().VGGBackbone(
        stackwise_num_repeats=[1, 1, 1, 1, 1], stackwise_num_filters=[8, 8, 16, 16, 32], image_shape=IMAGE_SHAPE
    )


def xception():
    return _hub().XceptionBackbone(
        stackwise_conv_filters=[[8, 8], [16, 16], [24, 24], [32, 32], [48, 48], [64, 64]],
        stackwise_pooling=[False, True, True, True, True, False], image_shape=IMAGE_SHAPE,
    )


def vit(num_layers=4):
    return _hub().ViTBackbone(
        image_shape=IMAGE_SHAPE, patch_size=4, num_layers=num_layers, num_heads=2, hidden_dim=16, mlp_dim=32
    )


def deit():
    return _hub().DeiTBackbone(
        image_shape=IMAGE_SHAPE, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32
    )


def dinov2(image_size=28):
    return _hub().DINOV2Backbone(
        patch_size=14, num_layers=5, hidden_dim=16, num_heads=2, intermediate_dim=32, num_register_tokens=4,
        image_shape=(image_size, image_size, 3), position_embedding_shape=(56, 56, 3),
    )


def dinov3():
    return _hub().DINOV3Backbone(
        patch_size=4, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32, num_register_tokens=4,
        image_shape=IMAGE_SHAPE,
    )


def clip():
    return _hub().CLIPVisionEncoder(
        patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32, image_shape=IMAGE_SHAPE
    )


def siglip():
    return _hub().SigLIPVisionEncoder(
        patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32, image_shape=IMAGE_SHAPE
    )


def metaclip2():
    return _hub().MetaCLIP2VisionEncoder(
        patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32, image_shape=IMAGE_SHAPE
    )


def swin():
    return _hub().SwinTransformerBackbone(
        image_shape=IMAGE_SHAPE, embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=4, patch_size=4,
        drop_path=0.0,
    )


FAMILIES = {
    "resnet": resnet, "efficientnet": efficientnet, "mobilenet": mobilenet, "cspnet": cspnet, "hgnetv2": hgnetv2,
    "densenet": densenet, "vgg": vgg, "xception": xception, "vit": vit, "deit": deit, "dinov2": dinov2,
    "dinov3": dinov3, "clip": clip, "siglip": siglip, "metaclip2": metaclip2, "swin": swin,
}
TAP_SHAPES = {
    "resnet": [(16, 16, 64), (8, 8, 64), (4, 4, 8), (2, 2, 8), (1, 1, 8)],
    "efficientnet": [(16, 16, 8), (8, 8, 8), (4, 4, 16), (2, 2, 16), (1, 1, 1280)],
    "mobilenet": [(16, 16, 8), (8, 8, 8), (4, 4, 8), (2, 2, 16), (1, 1, 32)],
    "cspnet": [(8, 8, 8), (4, 4, 16), (2, 2, 16), (1, 1, 32)],
    "hgnetv2": [(8, 8, 16), (4, 4, 16), (2, 2, 32), (1, 1, 32)],
    "densenet": [(8, 8, 72), (4, 4, 44), (2, 2, 30), (1, 1, 23)],
    "vgg": [(32, 32, 8), (16, 16, 8), (8, 8, 16), (4, 4, 16), (2, 2, 32), (1, 1, 32)],
    "xception": [(15, 15, 8), (13, 13, 16), (7, 7, 24), (4, 4, 32), (2, 2, 48), (1, 1, 64)],
    "vit": [(8, 8, 16)] * 4,
    "deit": [(8, 8, 16)] * 2,
    "dinov2": [(2, 2, 16)] * 4,
    "dinov3": [(8, 8, 16)] * 2,
    "clip": [(8, 8, 16)] * 2,
    "siglip": [(8, 8, 16)] * 2,
    "metaclip2": [(8, 8, 16)] * 2,
    "swin": [(4, 4, 16), (4, 4, 16)],
}
TRANSFER_TAPS = {"resnet": (1, 2, 3, 4)}  # the others: every tap
TRANSFORMERS = ("vit", "deit", "dinov2", "dinov3", "clip", "siglip", "metaclip2")
