"""A reproducible quantization lab: DVC stages from data download to int8 evaluation."""
