"""How should a 2:3 portrait poster meet a network trained on squares? Measured, not guessed.

EfficientNet-Lite0 linear probes on the shared splits, three ways of feeding the poster:
- `square-squash`: stretched to 224x224 (the whole poster, distorted);
- `square-crop`: centre crop to 224x224 (undistorted, loses the top and bottom third);
- `portrait`: 224x336, the whole poster at its own aspect (the network pools globally).

    python benchmarks/input_shape.py [--tasks three,imdb20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import print_table, require_data, write_result
from backbones import run_one

from postergenre._allocator import tune_allocator
from postergenre.data.preprocess import SYMMETRIC_RANGE, InputSpec
from postergenre.models import get_arch, register
from postergenre.models._registry import ArchSpec

VARIANTS = {
    "square-squash": InputSpec(224, 224, "squash", SYMMETRIC_RANGE),
    "square-crop": InputSpec(224, 224, "crop", SYMMETRIC_RANGE),
    "portrait": InputSpec(224, 336, "squash", SYMMETRIC_RANGE),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="three,imdb20")
    args = parser.parse_args()
    tune_allocator()
    data = require_data()
    base = get_arch("efficientnet-lite0")
    work = Path(tempfile.mkdtemp(prefix="input-shape-"))
    rows = []
    for name, spec in VARIANTS.items():
        arch = base.name if name == "portrait" else f"{base.name}-{name}"
        if arch != base.name:  # the same network, fed differently: a benchmark-only entry
            register(
                ArchSpec(
                    name=arch,
                    build=base.build,
                    input=spec,
                    description=f"{base.description} ({name})",
                    pretrained=True,
                    embedding_arch=arch,
                )
            )
        for task in args.tasks.split(","):
            row = run_one(arch, "linear-probe", task, data, work, epochs=1)
            rows.append({"input": name, "size": f"{spec.width}x{spec.height} {spec.resize}", **row})
    single = [r for r in rows if r["task"] == "three"]
    multi = [r for r in rows if r["task"] == "imdb20"]
    if single:
        print_table(single, ["input", "size", "accuracy", "val_accuracy", "macro_f1"])
    if multi:
        print()
        print_table(multi, ["input", "size", "map", "val_map", "micro_f1", "macro_f1"])
    print(f"\nwrote {write_result('input_shape', {'rows': rows})}")


if __name__ == "__main__":
    main()
