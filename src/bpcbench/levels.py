"""A model at each quantization level, made the one way every view makes it (the ladder,
`bpcbench lossy --quant`, a matrix's [lossy] quant): a high-precision base as it is, or a
quantized one re-expanded to F16 first, then each level quantized from it (files cached)."""

from __future__ import annotations

from dataclasses import dataclass

from bpcbench import models, quantize
from bpcbench.errors import BpcError

_HIGH_PRECISION = {"ALL_F32": "F32", "F32": "F32", "F16": "F16", "BF16": "BF16"}


@dataclass
class Base:
    path: str
    label: str  # e.g. "F16" or "F16 re-expanded from Q4_1"
    name: str
    report: quantize.QuantReport
    source: quantize.QuantReport | None = None  # the quantized file a re-expanded base came from
    source_type: str | None = None

    @property
    def reexpanded(self) -> bool:
        return self.source is not None


def prepare_base(spec: str, reexpand: bool = False, cache_dir=None, threads: int | None = None) -> Base:
    """Check the base is high precision, or (with reexpand) widen a quantized one to F16."""
    info = models.describe(spec)
    precision = _HIGH_PRECISION.get(info.quant_type.upper().replace("MOSTLY_", ""))
    if precision:
        return Base(info.path, precision, info.name, quantize.report_for_file(info.path, precision))
    if not reexpand:
        raise BpcError(
            f"base {spec} is {info.quant_type}, not F16/BF16/F32: quantizing it again measures "
            f"requantization damage; pass --reexpand to widen it to F16 first"
        )
    report = quantize.reexpand(info.path, nthread=threads, cache_dir=cache_dir)
    source = quantize.report_for_file(info.path, info.quant_type)
    return Base(report.path, f"F16 re-expanded from {info.quant_type}", info.name, report, source, info.quant_type)


def level_files(spec: str, levels, threads: int | None = None, cache_dir=None) -> list[tuple[str, str]]:
    """(label, GGUF path) of model `spec` at each quantization level, made as the ladder makes
    them (a quantized model is re-expanded to F16 first; files cached): for the other views of
    the ladder, such as `bpcbench lossy --quant`. A level llama.cpp cannot make is one BpcError."""
    base = prepare_base(spec, reexpand=True, cache_dir=cache_dir, threads=threads)
    source = f" from {base.source_type}" if base.reexpanded else ""
    return [(f"{base.name} {level}{source}", quantize.quantize(base.path, level, nthread=threads,
                                                               cache_dir=cache_dir).path)
            for level in quantize.parse_levels(levels)]
