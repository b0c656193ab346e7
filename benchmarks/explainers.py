"""What an explanation costs: SFAM beside the forward pass and the gradient methods, and the localisation protocol.

Every row is a ratio of two measurements made in this one process, interleaved (A, B, A, B, ...) after a
warm-up; each time is the median of the repeats. Rows:

1. ``sfam_vs_forward``: SFAM's query and support maps for B pairs against the plain forward passes SFAM
   cannot avoid (the B query images and the B support images, without gradients), for ResNet-50 at 224 px
   (target layer ``layer4``) and FRN's ResNet-12 at 84 px (its last block); batch 1 and 32. SFAM adds only
   Eq. 2-4 and Eq. 3 on feature maps the forward pass made, so the ratio should be close to 1.
2. ``gradient_vs_sfam``: the same maps from pytorch-grad-cam's ``GradCAM`` with a cosine target (the query
   map targets the support embedding and the support map the query's; both embeddings come from forward
   passes without gradients first, as pytorch-grad-cam explains one image at a time), and from this
   package's CG-RAM and Grad-FAM (one forward and one backward pass for both images), each divided by SFAM's
   time; and the peak memory of each method (on a GPU: ``torch.cuda.max_memory_allocated``; on a CPU: the
   peak of the memory torch allocates during the call, from ``torch.profiler``'s memory events).
3. ``localisation``: the protocol of :mod:`sfam_lite.localization` (min-max, threshold 0.2, largest
   8-connected component, box, IoU) on 84 px maps, batched, against a per-map loop over
   ``scipy.ndimage.label``; the boxes must be identical.
4. ``protocol`` (run first, so that the process's peak memory is its own): FRN's few-shot localisation protocol from cached features with every method
   (``sfam_lite.evaluate.evaluate_frn``): seconds, episodes per second, peak memory. Needs the trained
   synthetic FRN (chapter 4 or ``python -m sfam_lite.train frn-synthetic``); skipped with ``--rows 1,2,3``.

Weights are random (ImageNet weights cannot be downloaded everywhere); the time of a forward or backward
pass does not depend on the values of the weights. Run from the repository root::

    python benchmarks/explainers.py --device cpu --output benchmarks/results/explainers_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sfam_lite import CGRAM, SFAM, GradFAM                      # noqa: E402
from sfam_lite.localization import boxes_from_maps, iou        # noqa: E402
from sfam_lite.maps import minmax_normalize                     # noqa: E402
from sfam_lite.models import FRN                                # noqa: E402


# --- measuring -------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(functions: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    """Median seconds of each function, measured in turns (one call of each per round) after ``warmup`` rounds."""
    times = {name: [] for name in functions}
    for round_ in range(warmup + repeats):
        for name, fn in functions.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_bytes(fn, device: torch.device) -> int:
    """Peak memory that ``fn()`` allocates above what was allocated before the call."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile
    sys.stderr.flush()
    saved = os.dup(2)                                  # the profiler logs each start and stop on stderr: silence it
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                fn()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    # Each op's own allocations minus releases, and the releases outside ops ("[memory]" events), in time order:
    # their running sum is what torch holds (a peak inside one op, freed before it returns, is not seen).
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    running = np.cumsum([e.self_cpu_memory_usage for e in events]) if events else np.zeros(1)
    return int(max(running.max(), 0))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --- the models and the methods ----------------------------------------------------------------------------

def models(device: torch.device) -> dict:
    """name -> (model in eval mode, target layer, image side, SFAM's metric)."""
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None).eval().to(device)
    frn = FRN(width=1.0).eval().to(device)
    return {"resnet50-224": (resnet, resnet.layer4, 224, "cosine"),
            "resnet12-84": (frn, frn.feature_extractor.layer4, 84, "euclidean")}


class CosineTo:
    """A pytorch-grad-cam target: the cosine similarity of one image's (average-pooled) output with an embedding."""

    def __init__(self, embedding: torch.Tensor):
        self.embedding = embedding

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        output = output.mean(dim=(-2, -1)) if output.ndim == 3 else output
        embedding = self.embedding.mean(dim=(-2, -1)) if self.embedding.ndim == 3 else self.embedding
        return F.cosine_similarity(output, embedding, dim=0)


def method_calls(model, layer, metric, queries, supports, grad_cam=None) -> dict:
    """name -> a function making the query and support maps of the B pairs ``(queries[b], supports[b])``."""
    sfam, cgram, gradfam = SFAM(model, layer, metric=metric), CGRAM(model, layer), GradFAM(model, layer)
    pairs = supports[:, None]                                     # (B, K=1, C, H, W)

    def forward():
        with torch.no_grad():
            model(queries)
            model(supports)

    calls = {"forward": forward, "sfam": lambda: sfam(queries, pairs),
             "cgram": lambda: cgram(queries, pairs), "gradfam": lambda: gradfam(queries, pairs)}
    if grad_cam is not None:
        cam = grad_cam.GradCAM(model=model, target_layers=[layer])

        def gradcam():
            with torch.no_grad():
                e_q, e_s = model(queries), model(supports)
            cam(input_tensor=queries, targets=[CosineTo(e) for e in e_s])
            cam(input_tensor=supports, targets=[CosineTo(e) for e in e_q])

        calls["gradcam"] = gradcam
    return calls


# --- rows ----------------------------------------------------------------------------------------------

def explainer_rows(device, batches, repeats, warmup) -> list[dict]:
    try:
        import pytorch_grad_cam as grad_cam
    except ImportError:
        grad_cam = None
        print("pytorch-grad-cam is not installed: its GradCAM row is skipped (pip install grad-cam).")
    rows = []
    for name, (model, layer, side, metric) in models(device).items():
        for batch in batches:
            g = torch.Generator().manual_seed(batch)
            queries = torch.rand(batch, 3, side, side, generator=g).to(device)
            supports = torch.rand(batch, 3, side, side, generator=g).to(device)
            calls = method_calls(model, layer, metric, queries, supports, grad_cam)
            seconds = interleaved_medians(calls, device, repeats, warmup)
            memory = {m: peak_bytes(fn, device) for m, fn in calls.items()}
            row = {"model": name, "batch": batch, "seconds": seconds, "peak_bytes": memory,
                   "sfam_over_forward": seconds["sfam"] / seconds["forward"],
                   "over_sfam": {m: seconds[m] / seconds["sfam"] for m in seconds if m not in ("sfam", "forward")}}
            rows.append(row)
            print(f"  {name:13s} batch {batch:3d}: forward {1e3 * seconds['forward']:8.1f} ms, "
                  f"SFAM {1e3 * seconds['sfam']:8.1f} ms (x{row['sfam_over_forward']:.3f}); "
                  + ", ".join(f"{m} x{r:.2f}" for m, r in row["over_sfam"].items()), flush=True)
            print("    peak MiB: " + ", ".join(f"{m} {b / 2**20:.0f}" for m, b in memory.items()), flush=True)
    return rows


def reference_boxes(maps: np.ndarray, threshold: float) -> np.ndarray:
    """The protocol one map at a time: normalise, threshold, label, keep the largest component, its box."""
    eight = np.ones((3, 3), dtype=bool)
    out = np.zeros((len(maps), 4))
    for i, m in enumerate(maps):
        keep = minmax_normalize(m[None])[0] >= threshold
        labels, count = ndimage.label(keep, structure=eight)
        if count > 1:
            sizes = np.bincount(labels.ravel())[1:]
            keep = labels == (int(np.argmax(sizes)) + 1)
        rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
        out[i] = (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
    return out


def localisation_row(n_maps: int, repeats: int, threshold: float = 0.2) -> dict:
    """Maps per second of the batched protocol and of the per-map loop, on smooth 84 px maps (5 x 5 grids
    upsampled, as FRN's maps are) with random ground-truth boxes."""
    g = torch.Generator().manual_seed(0)
    grids = torch.rand(n_maps, 1, 5, 5, generator=g)
    maps = F.interpolate(grids, size=(84, 84), mode="bilinear", align_corners=False)[:, 0].numpy()
    truth = np.concatenate([np.random.default_rng(0).uniform(0, 40, (n_maps, 2)),
                            np.random.default_rng(1).uniform(10, 44, (n_maps, 2))], axis=1)
    n_ref = min(n_maps, 2000)
    calls = {"batched": lambda: iou(boxes_from_maps(maps, threshold), truth),
             "per_map_loop": lambda: iou(reference_boxes(maps[:n_ref], threshold), truth[:n_ref])}
    seconds = interleaved_medians(calls, torch.device("cpu"), repeats, 1)
    identical = bool(np.array_equal(boxes_from_maps(maps[:n_ref], threshold), reference_boxes(maps[:n_ref], threshold)))
    row = {"maps": n_maps, "batched_maps_per_s": n_maps / seconds["batched"],
           "loop_maps_per_s": n_ref / seconds["per_map_loop"], "identical_boxes": identical}
    row["speedup"] = row["batched_maps_per_s"] / row["loop_maps_per_s"]
    print(f"  localisation, 84 px maps: batched {row['batched_maps_per_s']:,.0f} maps/s, per-map loop "
          f"{row['loop_maps_per_s']:,.0f} maps/s (x{row['speedup']:.2f}); identical boxes: {identical}", flush=True)
    return row


def protocol_row(device, episodes: int) -> dict:
    """FRN's localisation protocol (all methods, threshold 0.2) from the cached model: wall time and memory."""
    from sfam_lite.evaluate import evaluate_frn, format_table
    from sfam_lite.loading import load_for
    from sfam_lite.methods import METHODS
    model, test, val_boxes = load_for("frn", device=str(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = evaluate_frn(model, test, val_boxes, episodes=episodes, methods=tuple(METHODS))
    synchronize(device)
    seconds = time.perf_counter() - start
    row = {"episodes": episodes, "seconds": seconds, "episodes_per_s": episodes / seconds,
           "explained_samples": result.info["explained_samples"], "distinct_pairs": result.info["distinct_pairs"],
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "model": result.info["model"], "few_shot_accuracy": result.info["few_shot_accuracy"],
           "tables": result.to_json()["tables"]}
    if device.type == "cuda":
        row["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
    print(f"  protocol: {episodes} episodes, all {len(METHODS)} methods, in {seconds:.1f} s "
          f"({row['episodes_per_s']:.1f} episodes/s; {row['distinct_pairs']} distinct pairs); peak resident "
          f"{row['peak_rss_bytes'] / 2**30:.2f} GiB" + (f", GPU {row['peak_gpu_bytes'] / 2**30:.2f} GiB"
                                                       if device.type == "cuda" else ""), flush=True)
    print(format_table(result, 0.2, "query"), flush=True)
    return row


def summarize(paths) -> str:
    """Markdown tables of the JSON files :func:`main` wrote."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    names = [r["machine"].get("gpu") or f"CPU, {r['machine']['threads']} threads" for r in runs]
    lines = ["| machine | model, batch | forward | SFAM / forward | GradCAM / SFAM | CG-RAM / SFAM | Grad-FAM / SFAM "
             "| peak MiB: SFAM, CG-RAM, Grad-FAM, GradCAM |", "|---|---|---|---|---|---|---|---|"]
    for name, r in zip(names, runs):
        for e in r.get("explainers", []):
            mib = [f"{e['peak_bytes'][m] / 2**20:.0f}" if m in e["peak_bytes"] else "—"
                   for m in ("sfam", "cgram", "gradfam", "gradcam")]
            gradcam = e["over_sfam"].get("gradcam")
            lines.append(f"| {name} | {e['model']}, {e['batch']} | {1e3 * e['seconds']['forward']:.1f} ms "
                         f"| {e['sfam_over_forward']:.2f} | {'—' if gradcam is None else f'{gradcam:.2f}'} "
                         f"| {e['over_sfam']['cgram']:.2f} | {e['over_sfam']['gradfam']:.2f} | {', '.join(mib)} |")
    lines += ["", "| machine | localisation, batched | per-map loop | same boxes | protocol: episodes, time, "
                  "peak resident (GPU) |", "|---|---|---|---|---|"]
    for name, r in zip(names, runs):
        loc, pro = r.get("localisation"), r.get("protocol")
        loc_cells = (f"{loc['batched_maps_per_s']:,.0f} maps/s | {loc['loop_maps_per_s']:,.0f} maps/s | "
                     f"{'yes' if loc['identical_boxes'] else 'NO'}" if loc else "— | — | —")
        pro_cell = "—" if not pro else (f"{pro['episodes']:,}, {pro['seconds']:.0f} s, {pro['peak_rss_bytes'] / 2**30:.2f} GiB"
                                        + (f" ({pro['peak_gpu_bytes'] / 2**30:.2f} GiB)" if "peak_gpu_bytes" in pro else ""))
        lines.append(f"| {name}, torch {r['machine']['torch']} | {loc_cells} | {pro_cell} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--rows", default="1,2,3,4", help="which rows: 1-2 explainers, 3 localisation, 4 protocol")
    parser.add_argument("--batches", default="1,32", help="batch sizes of rows 1-2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--maps", type=int, default=20000, help="maps of row 3")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes of row 4 (the paper: 10000)")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", help="print the tables of these result files, "
                        "e.g. benchmarks/results/explainers_*.json, and measure nothing")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: no CUDA device is available here; use --device cpu.", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    rows = {int(r) for r in args.rows.split(",")}
    result = {"machine": machine(), "device": str(device), "repeats": args.repeats, "warmup": args.warmup}
    print(json.dumps(result["machine"]), flush=True)
    def save():           # after every row, so that a run cut short keeps what it measured
        if args.output:
            path = Path(args.output)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(result, indent=1))
            os.replace(tmp, path)

    if 4 in rows:     # first, so that the process's peak resident memory is the protocol's, not the ResNet-50's
        print("row 4: FRN's localisation protocol from cached features", flush=True)
        result["protocol"] = protocol_row(device, args.episodes)
        save()
    if rows & {1, 2}:
        print("rows 1-2: SFAM vs the forward pass, gradient methods vs SFAM (median of "
              f"{args.repeats} after {args.warmup} warm-up rounds)", flush=True)
        result["explainers"] = explainer_rows(device, [int(b) for b in args.batches.split(",")], args.repeats,
                                              args.warmup)
        save()
    if 3 in rows:
        print("row 3: the localisation protocol", flush=True)
        result["localisation"] = localisation_row(args.maps, args.repeats)
        save()
    if args.output:
        print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
