"""torchvision's classification architectures by name, built from scratch (`train.weights` fills them with weights
you have on disk: nothing is downloaded) with the first convolution and the classifier fitted to the data's
channels and classes, and for vit_b_16 the image size.

Where torchvision has a quantizable twin (`torchvision.models.quantization`: QuantStub at the edges, residual
adds through FloatFunctional, `fuse_model`), that twin is built: in FP32 it computes exactly as the plain model,
holds the same weights under the same names, and the eager backend can convert it. The others are the plain
models, which the pt2e backend and the runtimes' quantizers quantize.
"""

import math

from torch import nn

from pipeline.errors import PipelineError

# built from torchvision.models.quantization
QUANTIZABLE = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x0_5")
PLAIN = ("mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16")  # from torchvision.models
ARCHITECTURES = (*QUANTIZABLE, *PLAIN)
FIRST_CONV = {
    "resnet18": "conv1",
    "resnet50": "conv1",
    "mobilenet_v2": "features.0.0",
    "mobilenet_v3_large": "features.0.0",
    "shufflenet_v2_x0_5": "conv1.0",
    "mobilenet_v3_small": "features.0.0",
    "efficientnet_b0": "features.0.0",
    "convnext_tiny": "features.0.0",
    "vit_b_16": "conv_proj",
}


def build_torchvision(name: str, input_shape: list[int], classes: int) -> nn.Module:
    """The architecture `name` for images of `input_shape` [channels, height, width] and `classes` classes, randomly
    initialized."""
    # Imported here: torchvision's models take over a second to import, which every stage would otherwise pay.
    import torchvision.models as plain
    from torchvision.models import quantization as twins

    channels, height, _ = input_shape
    if name in QUANTIZABLE:
        model = getattr(twins, name)(weights=None, quantize=False, num_classes=classes)
    else:
        size = {"image_size": height} if name == "vit_b_16" else {}  # its position embedding is per patch
        model = getattr(plain, name)(weights=None, num_classes=classes, **size)
    first = model.get_submodule(FIRST_CONV[name])
    if first.in_channels != channels:  # torchvision's stems take RGB
        parent, _, child = FIRST_CONV[name].rpartition(".")
        bias = first.bias is not None
        fitted = nn.Conv2d(channels, first.out_channels, first.kernel_size, first.stride, first.padding, bias=bias)
        setattr(model.get_submodule(parent) if parent else model, child, fitted)
    return model


def build_vit(arch: dict) -> nn.Module:
    """torchvision's VisionTransformer for the data's square images, its patch embedding taking their channels."""
    from torchvision.models import VisionTransformer

    channels, height, width = arch["input"]
    patch, heads, tokens = arch["patch_size"], arch["heads"], arch["width"]
    if height != width:  # torchvision's VisionTransformer takes square images only
        raise PipelineError(
            f"train.arch: vit takes square images, but they are {height}x{width} (set data.image_size to [{height}, "
            f"{height}], or data.resize with a square data.image_size)"
        )
    if height % patch:
        raise PipelineError(f"train.vit.patch_size: {patch} must divide the side of the images, {height}")
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
