"""Each chapter's CUB branch at CUB's real size: peak resident memory and wall time.

    python scripts/make_cub_fixture.py --scale cub _build/cub_scale        # once: 11,788 JPEGs, a few minutes
    python benchmarks/cub_scale.py --chapters 05 06 07 --output benchmarks/results/cub_scale_cpu.json

Every chapter runs in its own kernel through papermill, as a reader runs it, with the CUB branch's parameters
(``frn-cub`` on the stand-in's FRN weights, ``gpw-cub`` with the recipe's ResNet-50 at 227 px) and otherwise the
chapter's defaults. The stand-in has CUB's counts and image sizes but synthetic pictures and random FRN weights,
so the chapters' numbers mean nothing here: only memory and time are measured. gpw-cub is trained for
``--gpw-batches`` batches without ImageNet weights (none can be downloaded here): the explanations' memory does
not depend on how well the model is trained, and training a real gpw-cub is a GPU's work.

Peak memory is sampled every 0.2 s over the kernel and every process it starts (``psutil``'s resident set
size), and checked against the kernel's own high-water mark (``ru_maxrss`` of the finished child processes).
Where CUDA is available, the kernels run on it and the peak GPU memory of each is read from ``nvidia-smi``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ("04", "05", "06", "07", "08", "09", "10")


def parameters(data_root: Path, weights_root: Path, gpw_batches: int, device: str) -> dict:
    """The CUB branch's papermill parameters (a chapter ignores the ones it does not have)."""
    return {"data_root": str(data_root), "weights_root": str(weights_root), "frn_model": "frn-cub",
            "gpw_model": "gpw-cub", "gpw_overrides": {"weights": None, "batches": gpw_batches}, "device": device}


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    import psutil
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _gpu_used() -> int | None:
    """Bytes of GPU memory in use on device 0 (None without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip().splitlines()[0]) * 2**20
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _peak_per_cell(executed: Path, timeline: list) -> list:
    """``[[the cell's first line of code, seconds, peak GiB], ...]`` of the executed notebook's code cells that held
    1 GiB or more (papermill's start and end times per cell against the sampled resident sizes)."""
    from datetime import datetime
    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return []
    rows = []
    for cell in cells:
        meta = cell.get("metadata", {}).get("papermill", {})
        if cell.get("cell_type") != "code" or not meta.get("start_time") or not meta.get("end_time"):
            continue
        start, end = (datetime.fromisoformat(meta[key].replace("Z", "+00:00")).timestamp()
                      for key in ("start_time", "end_time"))
        held = [rss for t, rss in timeline if start - 0.2 <= t <= end + 0.2]
        if held and max(held) >= 2**30:
            first = next((line.strip() for line in "".join(cell["source"]).splitlines()
                          if line.strip() and not line.lstrip().startswith("#")), "")
            rows.append([first[:60], round(end - start, 1), round(max(held) / 2**30, 2)])
    return rows


def run_chapter(chapter: str, params: dict, out_dir: Path, env: dict) -> dict:
    """Execute one chapter with papermill; its wall time, peak RSS (sampled and ru_maxrss) and peak GPU memory."""
    [notebook] = sorted((ROOT / "notebooks").glob(f"{chapter}_*.ipynb"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "papermill", "--kernel", "python3", "--no-progress-bar", str(notebook),
            str(out_dir / notebook.name)]
    for key, value in params.items():
        args += ["-y", json.dumps({key: value})]
    # the driver runs papermill and reports the largest high-water mark among the processes it waited for
    driver = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
              "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", driver, *args], cwd=ROOT / "notebooks", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"rss": 0, "gpu": None}
    timeline = []                                  # (unix time, resident bytes): attributed to cells afterwards
    gpu_before = _gpu_used()

    def sample():
        while proc.poll() is None:
            rss = _tree_rss(proc.pid)
            timeline.append((time.time(), rss))
            peak["rss"] = max(peak["rss"], rss)
            used = _gpu_used() if gpu_before is not None else None
            if used is not None:
                peak["gpu"] = max(peak["gpu"] or 0, used - gpu_before)
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    log = proc.communicate()[0]
    watcher.join()
    wall = time.perf_counter() - start
    maxrss = next((int(line.split()[1]) * 1024 for line in log.splitlines() if line.startswith("MAXRSS_KB")), None)
    (out_dir / f"{notebook.stem}.log").write_text(log)
    result = {"chapter": notebook.stem, "ok": proc.returncode == 0, "wall_s": round(wall, 1),
              "peak_rss_gib": round(peak["rss"] / 2**30, 2),
              "maxrss_gib": None if maxrss is None else round(maxrss / 2**30, 2),
              "peak_gpu_gib": None if peak["gpu"] is None else round(peak["gpu"] / 2**30, 2)}
    result["cells"] = _peak_per_cell(out_dir / notebook.name, timeline)
    if proc.returncode != 0:
        result["error"] = log.strip().splitlines()[-1][:300] if log.strip() else "no output"
    return result


def summarize(path: str) -> str:
    """The Markdown table of a results file: one row per chapter."""
    results = json.loads(Path(path).read_text())
    m = results["machine"]
    lines = [f"Measured {m['date']} on {m['cpus']} CPU cores" + (f" and an {m['gpu']}" if m["gpu"] else "") +
             f" (torch {m['torch']}).", "",
             "| chapter | peak resident memory | wall time | cells that held most | peak GPU memory | commit |",
             "|---|---|---|---|---|---|"]
    for r in results["chapters"]:
        cells = sorted(r.get("cells", []), key=lambda c: -c[2])[:2]
        held = "; ".join(f"`{line}` {gib:.1f} GiB" for line, _, gib in cells) or "none above 1 GiB"
        gpu = "—" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.1f} GiB"
        status = "" if r["ok"] else " (failed: " + r.get("error", "")[:80] + ")"
        lines.append(f"| {r['chapter']}{status} | {r['peak_rss_gib']:.1f} GiB | {r['wall_s'] / 60:.1f} min | {held} "
                     f"| {gpu} | {r.get('commit', '?')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summarize", metavar="JSON", help="print the Markdown table of a results file and stop")
    parser.add_argument("--root", default=str(ROOT / "_build" / "cub_scale"),
                        help="the stand-in's folder (scripts/make_cub_fixture.py --scale cub ROOT)")
    parser.add_argument("--chapters", nargs="+", default=list(CHAPTERS), choices=CHAPTERS)
    parser.add_argument("--gpw-batches", type=int, default=2, help="gpw-cub's training batches (memory only)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", default=None, help="SFAM_BOOK_CACHE for the runs (default: ROOT/cache)")
    parser.add_argument("--output", help="JSON file that receives the results (rewritten after every chapter; the "
                                         "rows of chapters not run now are kept)")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    root = Path(args.root).resolve()
    data_root, weights_root = root / "cub200", root / "frn"
    if not (data_root / "CUB_200_2011").is_dir():
        sys.exit(f"error: no stand-in in {root}; make it first: python scripts/make_cub_fixture.py --scale cub {root}")
    env = dict(os.environ, SFAM_BOOK_CACHE=args.cache or str(root / "cache"), OMP_WAIT_POLICY="PASSIVE")
    import torch
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
               "cpu": platform.processor() or platform.machine(),
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "date": time.strftime("%Y-%m-%d")}
    params = parameters(data_root, weights_root, args.gpw_batches, args.device)
    results = {"machine": machine, "parameters": params, "chapters": []}
    if args.output and Path(args.output).exists():      # keep the other chapters' rows of an earlier run
        results["chapters"] = json.loads(Path(args.output).read_text())["chapters"]
    print(json.dumps(machine))
    for chapter in args.chapters:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()       # the code the chapter's kernel imports
        row = run_chapter(chapter, params, root / "executed", env)
        row["commit"] = commit
        results["chapters"] = sorted([r for r in results["chapters"] if r["chapter"] != row["chapter"]] + [row],
                                     key=lambda r: r["chapter"])
        print(json.dumps(row), flush=True)
        if args.output:
            tmp = Path(args.output).with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1) + "\n")
            tmp.replace(args.output)
    return 0 if all(r["ok"] for r in results["chapters"]) else 1


if __name__ == "__main__":
    sys.exit(main())
