"""What evaluation measures: latency, fidelity to FP32, sizes, the machine; and how variants compare."""
