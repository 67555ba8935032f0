"""The Markdown summary the report writes: one row per variant (accuracy and its interval, fidelity to FP32, size,
latency), what it was measured on, and a line each on fusion, the calibration draws, the op types a runtime's
quantizer was asked to keep in FP32, and how faithfully each runtime's int8 kernels compute the file.
"""

from pipeline.markdown import change_cell, table
from pipeline.measure.machine import machine_line
from pipeline.paths import VARIANTS


def summary_row(name: str, entry: dict, batch_keys: list[str]) -> list[str]:
    ratios = entry.get("vs_fp32")
    row = [
        name,
        f"{entry['accuracy']:.4f}",
        change_cell(ratios) if ratios else "",
        f"{entry['agreement'] * 100:.2f}%" if ratios else "",
        f"{entry['logit_sqnr_db']:.1f}" if ratios and entry["logit_sqnr_db"] is not None else "",
        f"{entry['deploy_size_bytes'] / 1000:.1f}",
        f"{1 / ratios['deploy_size_ratio']:.2f}" if ratios else "",
        f"{entry['deploy_floor_ratio']:.2f}",
    ]
    for key in batch_keys:
        row += [
            f"{entry['latency_ms'][key]:.3f} / {entry['latency_p90_ms'][key]:.3f}",
            entry["best_form"][key],
            f"{ratios['speedup'][key]:.2f}" if ratios else "",
        ]
    return row


def summary_markdown(metrics: dict) -> str:
    """One row per variant: accuracy, fidelity to FP32, deployed size, best-form latency; then the machine."""
    batch_keys = list(metrics["fp32"]["latency_ms"])
    header = [
        "variant",
        "accuracy",
        "vs fp32 (points) [95% interval]",
        "agrees with fp32",
        "logit SQNR (dB)",
        "deploy size (KB)",
        "x smaller",
        "x floor",
    ]
    for key in batch_keys:
        label = key.replace("_", " ")
        header += [f"{label} median / p90 (ms)", f"{label} best form", f"{label} x faster"]
    lines = table(header, [summary_row(name, metrics[name], batch_keys) for name in VARIANTS if name in metrics])
    env = metrics["environment"]
    cuda = metrics["fp32_cuda"]
    machine = (
        f"int8 backend {env.get('backend_label', env['backend'])}, its int8 ops run by {env['quantized_engine']}. "
        f"Measured on {machine_line(env)}; CPU capability {env['cpu_capability']}, {env['processor']}. Speed-ups "
        "compare the best form of each model on any runtime. "
        f"FP32 on CUDA: {cuda if isinstance(cuda, str) else cuda['latency_ms']}."
    )
    left_out = "".join(f"\n{name}: {reason}." for name, reason in metrics.get("variants_left_out", {}).items())
    body = "\n".join(lines) + "\n" + left_out
    return "# Quantization summary\n\n" + body + "\n" + machine + fusion_line(metrics) + steps_line(metrics) + "\n"


def steps_line(metrics: dict) -> str:
    bits = metrics["static"].get("weight_bits")
    narrower = f" Static int8's weights take {bits} bits ({2**bits} levels)." if bits else ""
    steps = metrics["static"].get("recovery_steps")
    return narrower + (f" Static int8 won accuracy back with: {', '.join(steps)}." if steps else "")


def fusion_line(metrics: dict) -> str:
    fusion = metrics["static"].get("fusion")
    if not isinstance(fusion, dict):
        return f" Layer fusion: {fusion}." if fusion else ""
    ratios = ", ".join(f"{ratio:.2f}x at {key.replace('_', ' ')}" for key, ratio in fusion["unfused_vs_fused"].items())
    return f" Layer fusion: static int8 unfused takes {ratios} the time of fused."


def draws_line(draws: dict) -> str:
    """Static int8's spread over the calibration draws, in points."""
    if not draws["draws"]:
        return ""
    accuracy, change = draws["accuracy"], draws["accuracy_change"]
    return (
        f"\nStatic int8 calibrated on {draws['draws']} other draws of the calibration images: accuracy "
        f"{accuracy['mean'] * 100:.2f}% on average ({accuracy['min'] * 100:.2f} to {accuracy['max'] * 100:.2f}), a "
        f"change from FP32 of {change['mean'] * 100:+.2f} points ({change['min'] * 100:+.2f} to "
        f"{change['max'] * 100:+.2f}).\n"
    )


def steps_ranking_line(rows: list[dict]) -> str:
    """What each recovery step wins, most first (sensitivity: the step left out, the rest of the recipe kept)."""
    if not rows:
        return ""
    won = ", ".join(f"{row['step']} {row['wins']:+.2f}" for row in rows)
    return f"\nStatic int8's recovery steps, points each wins (left out, the rest kept): {won}.\n"


def op_types_line(rows: list[dict]) -> str:
    """What keeping each op type in FP32 wins back, most first."""
    if not rows:
        return ""
    won = ", ".join(f"{row['op_type']} {row['won_back']:+.2f}" for row in rows)
    return f"\nStatic int8 with one op type kept in FP32 by its quantizer's op-type option, points won back: {won}.\n"


# Kernels round otherwise than the file and move a borderline image now and then: on an AVX2 EPYC,
# mobilenet_v3_small's per-tensor file agreed on 99.99% (ONNX Runtime) and 98.94% (OpenVINO) of the test images at
# the file's accuracy; its per-channel file, whose kernels saturate there, on 95.9% and 96.0%, 0.6 points lower.
KERNELS_FAITHFUL = 0.98


def kernels_line(metrics: dict) -> str:
    """How often each runtime's int8 kernels give the class the ONNX file's own arithmetic gives, and why it
    matters where they often do not."""
    shares = {
        f"{name} on {runtime}": share
        for name in VARIANTS
        if name in metrics
        for runtime, share in metrics[name].get("kernel_agreement", {}).items()
    }
    if not shares:
        return ""
    line = "\nint8 kernels against the ONNX file's own arithmetic (its quantize/dequantize pairs in FP32), test images "
    line += f"given the same class: {', '.join(f'{key} {share * 100:.2f}%' for key, share in shares.items())}."
    if min(shares.values()) < KERNELS_FAITHFUL:
        line += (
            f" Below {KERNELS_FAITHFUL:.0%}, the kernels compute otherwise than the file, e.g. 16-bit sums that "
            "saturate on a CPU without VNNI, which 7-bit weights (`onnxruntime.reduce_range: true`, "
            "`openvino.overflow_fix: enable`) avoid where that is the cause."
        )
    return line + "\n"
