"""The observers percentile, entropy and mse (`static.observer`), for PyTorch's eager backend and for pt2e.

Each is the backend's own HistogramObserver (torch.ao's, or torchao's copy of it for pt2e), which keeps a running
2048-bin histogram of the calibration activations, with its range search (an approximate L2 minimization) replaced
by one of `pipeline.backends.ranges`. The scale and zero point then come from the range as for any observer.
"""

import numpy as np
import torch

from pipeline.backends.ranges import entropy_range, mse_range, percentile_range


class RangeSearch:
    """Over a HistogramObserver: its histogram, another way to pick the range from it."""

    def search(self, counts: np.ndarray, low: float, high: float, symmetric: bool) -> tuple[float, float]:
        raise NotImplementedError

    def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.min_val.item(), self.max_val.item()
        if high <= low:  # one value seen: nothing to search
            return self.min_val, self.max_val
        symmetric = self.qscheme == torch.per_tensor_symmetric
        chosen = self.search(self.histogram.double().numpy(), low, high, symmetric)
        return tuple(torch.tensor(float(end), dtype=self.min_val.dtype) for end in chosen)


class Percentile(RangeSearch):
    def __init__(self, *args, percentile: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.percentile = percentile

    def search(self, counts, low, high, symmetric):
        return percentile_range(counts, low, high, self.percentile, symmetric)


class Entropy(RangeSearch):
    def search(self, counts, low, high, symmetric):
        return entropy_range(counts, low, high, symmetric)


class Mse(RangeSearch):
    def search(self, counts, low, high, symmetric):
        return mse_range(counts, low, high, self.quant_min, self.quant_max, symmetric)


SEARCHES = {"percentile": Percentile, "entropy": Entropy, "mse": Mse}


def range_searches(histogram_observer: type) -> dict[str, type]:
    """The observers of SEARCHES, each on the given HistogramObserver class."""
    return {
        name: type(f"{search.__name__}Observer", (search, histogram_observer), {}) for name, search in SEARCHES.items()
    }


def observer_options(observer: str, percentile: float | None) -> dict:
    """The keyword arguments an observer takes beyond PyTorch's: the percentile observer's percentile."""
    return {"percentile": percentile} if observer == "percentile" else {}
