"""The eager backend: torch.ao.quantization's modules (`modules`), run as TorchScript (`backend`).

PyTorch has deprecated torch.ao.quantization; the day it is removed, this package is what goes."""
