"""What the parts of a CUB-size chapter hold in memory, before and after the changes that keep it under 8 GiB.

    python benchmarks/memory_parts.py            # about 30 minutes on 2 cores

Each measurement runs in a fresh process and reports its peak resident memory above what the process held
before the step (``ru_maxrss``), so that one step's allocator does not hide the next one's. Random inputs of
the real shapes: a ResNet-50 at 227 px (gpw-cub's), FRN's full-width ResNet-12 at 84 px (frn-cub's),
100 five-way episodes on 2,950 test images (chapter 5's default on FRN's CUB test split), and chapter 10's
half-blur test on its 60 pairs of two-bird composites (120 composites, each scored against two supports).
"""
from __future__ import annotations

import json
import subprocess
import sys

STEPS = {
    "forward, ResNet-50 at 227 px, 250 images": ("resnet50", 250),
    "forward, ResNet-50 at 227 px, default batch": ("resnet50", None),
    "forward, FRN ResNet-12 at 84 px, 250 images": ("frn", 250),
    "episodes, FRN d = 640, 50 solved at once": ("episodes", 50),
    "episodes, FRN d = 640, default chunk": ("episodes", None),
    "half-blur, FRN at 84 px, 128 combinations": ("halfblur-frn", 128),
    "half-blur, FRN at 84 px, default batch": ("halfblur-frn", None),
    "half-blur, ResNet-50 at 227 px, 22 combinations": ("halfblur-resnet50", 22),
    "half-blur, ResNet-50 at 227 px, default batch": ("halfblur-resnet50", None),
}

CHILD = r"""
import json, resource, sys, torch
kind, size = sys.argv[1], None if sys.argv[2] == "None" else int(sys.argv[2])
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
torch.manual_seed(0)
if kind in ("resnet50", "frn"):
    import torchvision
    from sfam_lite.evaluation import forward_with_features
    from sfam_lite.models import FRN
    model = torchvision.models.resnet50().eval() if kind == "resnet50" else FRN(width=1.0).eval()
    layer = model.layer4 if kind == "resnet50" else model.target_layer
    x = torch.randn(250, 3, 227, 227) if kind == "resnet50" else torch.randn(250, 3, 84, 84)
    before = peak()
    forward_with_features(model, layer, x, batch=size)
elif kind.startswith("halfblur"):
    import torchvision
    from sfam_lite.models import FRN
    from sfam_lite.sanity import cosine_similarity_of, frn_similarity
    from sfam_lite.similarity import half_blur_drops
    frn = kind == "halfblur-frn"
    model = FRN(width=1.0).eval() if frn else torchvision.models.resnet50().eval()
    side = 84 if frn else 227
    composites, supports = torch.randn(120, 3, side, side), torch.randn(120, 3, side, side)   # chapter 10's 60 pairs
    similarity = frn_similarity(model) if frn else cosine_similarity_of(model)
    before = peak()
    half_blur_drops(similarity, composites, supports, batch=size)
else:
    from sfam_lite.evaluation import few_shot_decisions
    from sfam_lite.models import FRN
    model = FRN(width=1.0).eval()
    labels = torch.arange(50).repeat_interleave(59)
    features = torch.rand(len(labels), 25, 640) / 25
    before = peak()
    few_shot_decisions(model, features, labels, episodes=100, chunk=size)
print(json.dumps({"above_before_gib": round((peak() - before) / 2**30, 2)}))
"""


def main() -> int:
    results = {}
    for name, (kind, size) in STEPS.items():
        out = subprocess.run([sys.executable, "-c", CHILD, kind, str(size)], capture_output=True, text=True,
                             check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])["above_before_gib"]
        print(f"{name:<48} {results[name]:5.2f} GiB above the process before it", flush=True)
    images = 5924 * 3 * 227 * 227
    print(f"{'gpw-cub test images (5,924 at 227 px), float32':<48} {4 * images / 2**30:5.2f} GiB")
    print(f"{'gpw-cub test images (5,924 at 227 px), uint8':<48} {images / 2**30:5.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
