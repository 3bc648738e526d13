"""keras-hub vision backbones as keras_l2t `Backbone`s: where each family is tapped.

`hub_taps(backbone)` finds the feature maps that transfer pairs use, for every
keras-hub vision family, from the backbone's own functional graph:
- **ResNet / ResNetV2**: tap 0 the stem before its max-pool, taps 1–4 the
  pyramid outputs P2–P5 (the four stages), as the official code numbers a
  ResNet (pairs such as "all" draw from 1–4);
- **CNNs with `pyramid_outputs`** (EfficientNet, CSPNet, DenseNet, ...): the
  levels in order; **HGNetV2** (a dict of stage outputs): the stages;
- **other CNNs** (MobileNet, VGG, Xception): the deepest layer output at
  each spatial resolution, i.e. the end of each stage;
- **vision transformers** (ViT, DeiT, DINOv2, DINOv3, and the image towers
  of CLIP, SigLIP and MetaCLIP2): the token outputs of chosen blocks (1-based
  block numbers; by default 4 evenly spaced, the last included), as
  (H/p, W/p, D) maps without class, distillation and register tokens
  (`TokenGrid`). DINOv2 and DINOv3 expose their blocks as `pyramid_outputs`;
  ViT and DeiT run theirs inside one encoder layer, so their outputs are
  recomputed by calling that encoder's own blocks in order (same weights);
- **Swin**: the output of each stage.

`hub_target` builds a trainable target from any of these (random weights,
from a class and its arguments or a preset's config).
"""

import math

import keras

from keras_l2t.backbones.backbone import Backbone
from keras_l2t.errors import InputError
from keras_l2t.layers.token_grid import TokenGrid

DEFAULT_TRANSFORMER_TAPS = 4


def import_keras_hub():
    """The keras_hub module, or an InputError saying how to install it."""
    try:
        import keras_hub  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise InputError(
            f"keras-hub networks need the keras-hub package ({error}); `pip install keras-hub safetensors` "
            "(keras-hub needs Python >= 3.11)."
        ) from error
    return keras_hub


def default_blocks(num_blocks, count=DEFAULT_TRANSFORMER_TAPS):
    """`count` evenly spaced 1-based block numbers ending with the last (3, 6, 9, 12 of 12)."""
    return tuple(sorted({max(1, round(num_blocks * (i + 1) / count)) for i in range(count)}))


def vision_tower(backbone):
    """The image tower of a two-tower backbone (CLIP, SigLIP, MetaCLIP2), else the backbone itself."""
    return getattr(backbone, "vision_encoder", None) or backbone


def _transformer_blocks(backbone):
    """(block outputs as token tensors, prefix tokens, patch size) of a vision transformer, or None."""
    hub = import_keras_hub().models
    if isinstance(backbone, (hub.DINOV2Backbone, hub.DINOV3Backbone)):
        levels = sorted((k for k in backbone.pyramid_outputs if k.startswith("stage")), key=lambda k: int(k[5:]))
        return [backbone.pyramid_outputs[k] for k in levels], 1 + backbone.num_register_tokens, backbone.patch_size
    if isinstance(backbone, (hub.ViTBackbone, hub.DeiTBackbone)):
        vit = isinstance(backbone, hub.ViTBackbone)
        embedding, encoder = backbone.layers[1], backbone.layers[2]  # (patching and embedding, encoder)
        x = encoder.dropout(embedding.output) if vit and hasattr(encoder, "dropout") else embedding.output
        outputs = []
        for block in encoder.encoder_layers:  # the encoder's own blocks, called in its order
            x = block(x) if vit else block(x, return_attention_scores=True)[0]
            outputs.append(x)
        prefix = int(bool(getattr(backbone, "use_class_token", True))) if vit else 2  # DeiT: class + distillation
        return outputs, prefix, _pair(backbone.patch_size)[0]
    two_tower = (hub.CLIPVisionEncoder, hub.SigLIPVisionEncoder, hub.MetaCLIP2VisionEncoder)
    if isinstance(backbone, two_tower):
        prefix = 0 if isinstance(backbone, hub.SigLIPVisionEncoder) else 1
        return [block.output for block in backbone.encoder_layers], prefix, backbone.patch_size
    return None


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _image_size(backbone):
    shape = backbone.inputs[0].shape
    return int(shape[1]), int(shape[2])


def _transformer_taps(backbone, found, blocks, spec):
    """Taps of the chosen blocks; `found` is `_transformer_blocks(backbone)` (computed once: ViT's recompute)."""
    outputs, prefix, patch = found
    blocks = default_blocks(len(outputs)) if blocks is None else tuple(int(b) for b in blocks)
    bad = [b for b in blocks if not 1 <= b <= len(outputs)]
    if bad or not blocks:
        raise InputError(
            f"Blocks {list(blocks)} of {spec}: it has blocks 1..{len(outputs)} (choose them with --source_blocks)."
        )
    height, width = (size // patch for size in _image_size(backbone))
    names = [f"block{b}" for b in blocks]
    taps = [TokenGrid(prefix, height, width, name=name)(outputs[b - 1]) for b, name in zip(blocks, names)]
    return names, taps, None


def _swin_taps(backbone):
    names, taps = [], []
    for stage in backbone.stages:
        tokens = backbone.get_layer(stage.name).output
        side = math.isqrt(int(tokens.shape[1]))
        names.append(stage.name)
        taps.append(TokenGrid(0, side, side, name=stage.name + "_map")(tokens))
    return names, taps, None


def _resnet_stem(backbone, spec):
    """The stem output of a keras-hub ResNet before its max-pool: the official code's feature 0 (`r1`).

    That is the last input conv's ReLU (`conv{n}_relu`); a pre-activation ResNet
    (v2) has no BN/ReLU there, so it is that conv's output (`conv{n}_conv`).
    """
    last = len(backbone.input_conv_filters)
    layer_name = f"conv{last}_conv" if backbone.use_pre_activation else f"conv{last}_relu"
    try:
        return backbone.get_layer(layer_name).output
    except ValueError as error:
        raise InputError(
            f"The ResNet backbone of {spec} has no layer {layer_name!r} to tap as its stem (tap 0); "
            "this keras-hub version names its layers differently."
        ) from error


def _resolution_stage_taps(backbone):
    """The last 4-D layer output at each spatial resolution, in network order (the end of each stage)."""
    last_at = {}
    for layer in backbone.layers[1:]:
        try:
            output = layer.output
        except (AttributeError, ValueError):  # called several times, or not at all
            continue
        if isinstance(layer, keras.layers.ZeroPadding2D):  # a border for the next conv, never a stage's end
            continue
        if isinstance(output, keras.KerasTensor) and len(output.shape) == 4:
            last_at[tuple(output.shape[1:3])] = (layer.name, output)
    return [name for name, _ in last_at.values()], [tensor for _, tensor in last_at.values()], None


def hub_taps(backbone, blocks=None, spec=None):
    """(tap names, tap tensors, transfer taps or None for all) of a keras-hub vision backbone's graph.

    Args:
        backbone: A keras-hub vision `Backbone` (or a CLIP/SigLIP/MetaCLIP2
            backbone, whose image tower is tapped).
        blocks: Transformers only: 1-based block numbers (default: 4 evenly
            spaced); other families are tapped at their stages whatever it says.
        spec: How errors name the network.

    Raises:
        InputError: a block out of range, or a backbone without image feature maps.
    """
    hub = import_keras_hub().models
    spec = spec or type(backbone).__name__
    backbone = vision_tower(backbone)
    found = _transformer_blocks(backbone)
    if found is not None:
        return _transformer_taps(backbone, found, blocks, spec)
    if isinstance(backbone, hub.SwinTransformerBackbone):
        return _swin_taps(backbone)
    pyramid = getattr(backbone, "pyramid_outputs", None) or {}
    if pyramid and all(k.startswith("P") and k[1:].isdigit() for k in pyramid):
        levels = sorted(pyramid, key=lambda level: int(level[1:]))
        names, taps = list(levels), [pyramid[k] for k in levels]
        if isinstance(backbone, hub.ResNetBackbone):
            return ["stem"] + names, [_resnet_stem(backbone, spec)] + taps, tuple(range(1, len(names) + 1))
        return names, taps, None
    if isinstance(backbone, hub.HGNetV2Backbone):  # a dict of outputs: {stem, stage1, ...}
        names = [k for k in backbone.output if k != "stem"]
        return names, [backbone.output[k] for k in names], None
    if not isinstance(backbone.output, dict) and len(backbone.output.shape) == 4:
        return _resolution_stage_taps(backbone)
    raise InputError(f"{spec} ({type(backbone).__name__}) is not a keras-hub image backbone with feature maps to tap.")


def hub_network(backbone, image_size, blocks=None, spec=None, head=None, affine=None, name=None):
    """A functional `[first output, taps...]` network and transfer taps of a keras-hub backbone.

    The network takes `image_size`×`image_size` images; `affine` (a layer)
    maps them to the backbone's input convention first. Its first output is
    `head` applied to the backbone's output (a classifier head, logits), or
    without a head the global average of the last tap (an embedding).
    """
    tower = vision_tower(backbone)
    names, taps, transfer_taps = hub_taps(backbone, blocks, spec)
    first = head(tower.output) if head is not None else keras.layers.GlobalAveragePooling2D(name="embedding")(taps[-1])
    features = keras.Model(tower.inputs, [first] + taps, name=f"{name or tower.name}_features")
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = affine(inputs) if affine is not None else inputs
    first, *maps = features(x)
    maps = [keras.layers.Identity(name=tap_name)(tap) for tap_name, tap in zip(names, maps)]  # named taps
    return keras.Model(inputs, [first] + maps, name=f"{name or tower.name}_network"), transfer_taps


def hub_target(backbone, num_classes, image_size=None, blocks=None, name=None):
    """A trainable target `Backbone` from a keras-hub vision backbone: its taps, a fresh linear head.

    Args:
        backbone: A keras-hub `Backbone` object (e.g. built at random weights
            from its class and arguments), or a preset (name, handle or local
            directory) whose config is built without its weights.
        num_classes: Classes of the target task.
        image_size: Input side for a preset (default: the preset's).
        blocks: Transformers: which blocks to tap (1-based; default 4 evenly spaced).
        name: The Backbone's name.

    The head is global average pooling of the backbone's last feature map (the
    last tap) and a Dense layer. Inputs are keras_l2t's ImageNet-normalised
    images. (`L2TWW` makes its normalisation layers exact in their second
    derivative, `keras_l2t.layers.exact_normalizations`.)
    """
    keras_hub = import_keras_hub()
    if isinstance(backbone, str):
        kwargs = {"image_shape": (image_size, image_size, 3)} if image_size else {}
        try:
            backbone = keras_hub.models.Backbone.from_preset(backbone, load_weights=False, **kwargs)
        except (ValueError, FileNotFoundError, OSError, TypeError) as error:
            raise InputError(f"keras-hub could not build a backbone from {backbone!r}: {error}") from error
    size = _image_size(vision_tower(backbone))
    if size[0] != size[1]:
        raise InputError(f"The target's input must be square, got {size}.")
    _, taps, transfer_taps = hub_taps(backbone, blocks)
    pooled = keras.layers.GlobalAveragePooling2D(name="target_pool")(taps[-1])
    logits = keras.layers.Dense(num_classes, name="target_logits")(pooled)
    tower = vision_tower(backbone)
    # One flat graph of keras-hub's layers (no nested model), so that the inference export keeps only
    # the path to the logits and loads with Keras and keras-hub alone. Taps keep their layers' names.
    network = keras.Model(tower.inputs, [logits] + taps, name=f"{name or tower.name}_network")
    return Backbone(network, transfer_taps=transfer_taps, name=name or tower.name)
