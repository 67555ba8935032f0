"""torchvision's classification architectures by name, built from scratch (no pretrained weights can be had
here) with the first convolution and the classifier fitted to the data's channels and classes.

Where torchvision has a quantizable twin (`torchvision.models.quantization`: QuantStub at the edges, residual
adds through FloatFunctional, `fuse_model`), that twin is built: in FP32 it computes exactly as the plain model,
and the eager backend can convert it. mobilenet_v3_small has none in torchvision: it is the plain model, which
only the pt2e backend quantizes.
"""

import math

from torch import nn

from pipeline.errors import PipelineError

QUANTIZABLE = ("resnet18", "mobilenet_v2", "shufflenet_v2_x0_5")  # built from torchvision.models.quantization
PLAIN = ("mobilenet_v3_small",)  # from torchvision.models
ARCHITECTURES = (*QUANTIZABLE, *PLAIN)
FIRST_CONV = {
    "resnet18": "conv1",
    "mobilenet_v2": "features.0.0",
    "shufflenet_v2_x0_5": "conv1.0",
    "mobilenet_v3_small": "features.0.0",
}


def build_torchvision(name: str, channels: int, classes: int) -> nn.Module:
    """The architecture `name` for images of `channels` channels and `classes` classes, randomly initialized."""
    # Imported here: torchvision's models take over a second to import, which every stage would otherwise pay.
    import torchvision.models as plain
    from torchvision.models import quantization as twins

    if name in QUANTIZABLE:
        model = getattr(twins, name)(weights=None, quantize=False, num_classes=classes)
    else:
        model = getattr(plain, name)(weights=None, num_classes=classes)
    first = model.get_submodule(FIRST_CONV[name])
    if first.in_channels != channels:  # torchvision's stems take RGB
        parent, _, child = FIRST_CONV[name].rpartition(".")
        fitted = nn.Conv2d(channels, first.out_channels, first.kernel_size, first.stride, first.padding, bias=False)
        setattr(model.get_submodule(parent) if parent else model, child, fitted)
    return model


def build_vit(arch: dict) -> nn.Module:
    """torchvision's VisionTransformer for the data's square images, its patch embedding taking their channels."""
    from torchvision.models import VisionTransformer

    channels, height, width = arch["input"]
    patch, heads, tokens = arch["patch_size"], arch["heads"], arch["width"]
    if height != width or height % patch:
        raise PipelineError(
            f"train.vit.patch_size: {patch} must divide the side of square images, but they are {height}x{width} "
            "(data.image_size resizes them)"
        )
    if tokens % heads:
        raise PipelineError(f"train.vit.heads: {heads} must divide train.vit.width ({tokens})")
    model = VisionTransformer(
        image_size=height,
        patch_size=patch,
        num_layers=arch["depth"],
        num_heads=heads,
        hidden_dim=tokens,
        mlp_dim=arch["mlp_width"],
        num_classes=arch["classes"],
    )
    # torchvision's patch embedding takes RGB: one for the data's channels, initialized as torchvision does
    model.conv_proj = nn.Conv2d(channels, tokens, patch, patch)
    nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / (channels * patch * patch)))
    nn.init.zeros_(model.conv_proj.bias)
    return model
