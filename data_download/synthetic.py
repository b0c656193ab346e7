"""The synthetic benchmark: procedurally drawn "birds" on natural-looking clutter, in CUB's exact layout.

Why it exists: with no network, explanation quality must still be measurable, so
the data are built such that a localisation score means something:

* **Evidence only in the box.** A class is defined by the bird's parts alone (body, belly, head,
  wing colour and pattern, tail shape, beak, head marking); backgrounds, placement and size are drawn
  independently of the class. The box is the tight box of the drawn bird.
* **Fine-grained.** Classes come in genera of 8 sharing a base bird; each species changes one part
  of it, and species ``j`` and ``j + 4`` of a genus change the *same* part to different values, so
  they differ in one part only (e.g. classes 3 and 7, both in FRN's test split).
* **Random placement and scale.** Box area is 16–40 % of the 96 px image (median ≈ 28 %; 17–48 %,
  median ≈ 33 % after FRN's Resize(92)/CenterCrop(84)), large enough for a 5×5 feature map as CUB's
  birds are; tilt and flip vary the box's shape, and its position along each axis is
  ``Beta(0.7, 0.7)``-distributed over the free range (a mild preference for off-centre positions), so
  a centred prior scores low. This is a choice of the benchmark, not a model of CUB; ``boxes(params,
  placement=1.0)`` gives the same birds placed uniformly, and chapter 3 compares the centre priors on both.
* **Natural clutter.** Sky or foliage gradient, blurred distant foliage, branches, leaves, stones and
  grass, in colours some of which the birds share (browns, greys, olive, greens, yellow, rust, buff)
  and some of which they do not (red, orange, blue, teal, black).

Every image is drawn from its own random streams ``(seed, image_id)``, so it can be regenerated alone
(:func:`render_image`), and the result does not depend on the number of worker processes. The birds
are defined in :mod:`data_download.birds`, the backgrounds in :mod:`data_download.scenery`; this module
poses, draws and writes them.

Counterfactual images (not part of the benchmark; chapter 10 draws them): :func:`render_two` puts two birds into
one scene, one per half, with the scene's one-bird versions; ``render(..., frame=spec)`` redraws an image with
another species in the outline of ``spec``, so that a sibling changes only the part they differ in.
"""
from __future__ import annotations

import io
import json
import math
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .birds import ATTRIBUTES, GENERA, GENUS_SIZE, PALETTE, bird_parts, class_specs  # noqa: F401 (re-exported)
from .errors import DataError, disk_errors
from .publish import FOLDER, MARKER, build_folder, check_absent_or_complete, first_use_lock, publish, read_marker
from .resources import DEFAULT_ROOTS, download_command
from .scenery import background

__all__ = ["Params", "check_params", "generate", "read_params", "render", "render_image", "image_rngs", "boxes", "save_jpeg",
           "render_two", "scene_rngs", "TwoBirds",
           "file_name", "class_specs", "bird_parts", "ATTRIBUTES", "PALETTE", "GENERA", "GENUS_SIZE"]

VERSION = 1
SUPERSAMPLE = 2
#: Upper limits of the generation parameters: beyond them a typo (``--size 100000``) would try to allocate tens of GiB.
MAX_SIZE, MAX_IMAGES_PER_CLASS = 2048, 10000


@dataclass(frozen=True)
class Params:
    """Generation parameters (stored in the completion marker)."""
    images_per_class: int = 40
    size: int = 96
    seed: int = 0
    num_classes: int = 200
    quality: int = 90
    version: int = VERSION


# ---------------------------------------------------------------------------------------------- images

#: Box area as a share of the image: ``LO + (HI - LO) * Beta(A, A)``.
SHARE_LO, SHARE_HI, SHARE_A = 0.16, 0.40, 1.3
#: Box position along each axis: ``(size - extent) * Beta(P, P)``; ``P < 1`` favours off-centre positions.
PLACE_P = 0.7
#: Tilt of the bird in radians (negative: head up, as when perched).
TILT = (-0.9, 0.5)


def _outward_box(points: np.ndarray) -> np.ndarray:
    """The tight box ``x y w h`` of ``points`` ``(k, 2)``, rounded outwards to 0.1 px, as bounding_boxes.txt stores it."""
    (x, y), (x1, y1) = points.min(0), points.max(0)
    x0, y0 = math.floor(x * 10) / 10, math.floor(y * 10) / 10
    x1, y1 = math.ceil(x1 * 10) / 10, math.ceil(y1 * 10) / 10
    return np.array([x0, y0, x1 - x0, y1 - y0])


def _pose(spec: dict, rng: np.random.Generator, size: int, placement: float | None = None,
          frame: dict | None = None):
    """Random pose: returns the transformed polygons (final pixel units) and the tight box ``x y w h``
    of their vertices (the box of what is drawn, as every part is a polygon). The position along each axis
    is ``Beta(placement, placement)`` over the free range (default :data:`PLACE_P`); it is the last draw,
    so the size, tilt and side do not depend on ``placement``.

    ``frame`` (default: ``spec``) is the bird whose outline sets the scale and the place: drawing a species
    with the outline of its sibling gives every part they share the sibling's pixels exactly (a longer tail
    may then reach outside the image, and so may the box)."""
    placement = PLACE_P if placement is None else placement
    parts = bird_parts(spec)
    stretch = rng.uniform(0.9, 1.1)
    theta = rng.uniform(*TILT)
    flip = rng.random() < 0.5
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, s], [-s, c]])
    mirror = (-1.0 if flip else 1.0, 1.0)

    def turn(polygons):
        return [p * (stretch, 1.0) @ rot * mirror for p in polygons]
    local = turn(p for _, p in parts)
    outline = local if frame is None else turn(p for _, p in bird_parts(frame))
    allpts = np.concatenate(outline)
    lo, hi = allpts.min(0), allpts.max(0)
    extent = hi - lo
    share = SHARE_LO + (SHARE_HI - SHARE_LO) * rng.beta(SHARE_A, SHARE_A)
    scale = size * math.sqrt(share / (extent[0] * extent[1]))
    scale = min(scale, 0.98 * size / extent.max())
    w, h = extent * scale
    x, y = (size - w) * rng.beta(placement, placement), (size - h) * rng.beta(placement, placement)
    polys = [(p - lo) * scale + (x, y) for p in local]
    return [(col, q) for (col, _), q in zip(parts, polys)], _outward_box(np.concatenate(polys))


def _paint(canvas: Image.Image, polys, light: float) -> None:
    """Fill the posed ``polys`` (final pixel units) into ``canvas`` (drawn at :data:`SUPERSAMPLE`), shaded by ``light``."""
    draw = ImageDraw.Draw(canvas)
    for colour, pts in polys:
        shade = tuple(int(min(255, v * light)) for v in colour)
        draw.polygon([tuple(p) for p in pts * SUPERSAMPLE], fill=shade)


def _finish(canvas: Image.Image, noise: np.ndarray) -> np.ndarray:
    """Reduce a supersampled canvas to the final size and add the sensor ``noise``: uint8 ``(size, size, 3)``."""
    return np.clip(np.asarray(canvas.reduce(SUPERSAMPLE), float) + noise, 0, 255).astype(np.uint8)


def render(spec: dict, size: int, pose_rng: np.random.Generator,
           scene_rng: np.random.Generator, frame: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image of class ``spec``: returns ``(image, background, box)``, uint8 ``(size, size, 3)`` twice.

    ``background`` is the same picture without the bird (same noise), ``box`` the bird's tight box.
    The bird's pose, size and place come from ``pose_rng`` alone, everything else from ``scene_rng``.
    ``frame`` (default ``spec``): the bird whose outline sets the size and place (see :func:`_pose`); with the
    same random streams, ``render(sibling, ..., frame=spec)`` differs from ``render(spec, ...)`` only where the
    two birds' parts differ.
    """
    polys, box = _pose(spec, pose_rng, size, frame=frame)
    bg = background(scene_rng, size * SUPERSAMPLE)
    light = scene_rng.uniform(0.88, 1.1)
    img = bg.copy()
    _paint(img, polys, light)
    noise = scene_rng.normal(0, 3.0, (size, size, 3))
    return _finish(img, noise), _finish(bg, noise), box


@dataclass(frozen=True)
class TwoBirds:
    """A scene of two birds (:func:`render_two`) and its counterfactuals, uint8 ``(size, size, 3)`` each.

    ``only_a`` / ``only_b``: the scene with bird B / bird A left out (same background, light and noise);
    ``background``: with both left out. ``box_a``, ``box_b``: the birds' tight boxes ``x y w h``."""
    scene: np.ndarray
    only_a: np.ndarray
    only_b: np.ndarray
    background: np.ndarray
    box_a: np.ndarray
    box_b: np.ndarray


def render_two(spec_a: dict, spec_b: dict, size: int, pose_rng: np.random.Generator,
               scene_rng: np.random.Generator) -> TwoBirds:
    """Draw bird ``spec_a`` in the left half ``[0, size // 2)`` and bird ``spec_b`` in the right half of one scene.

    Each bird is posed by :func:`_pose` in a square of side ``size // 2`` (its size share, tilt, side and place
    within that square as for a one-bird image), then moved into its half and down by a uniform vertical offset
    over the free height, so the two never overlap. Poses and offsets come from ``pose_rng`` (A's, then B's),
    the background, light and noise from ``scene_rng``: the same streams give the same scene."""
    half = size // 2
    placed = []
    for spec, dx in ((spec_a, 0), (spec_b, half)):
        polys, _ = _pose(spec, pose_rng, half)
        dy = pose_rng.uniform(0, size - half)
        polys = [(col, p + (dx, dy)) for col, p in polys]
        placed.append((polys, _outward_box(np.concatenate([p for _, p in polys]))))
    bg = background(scene_rng, size * SUPERSAMPLE)
    light = scene_rng.uniform(0.88, 1.1)
    noise = scene_rng.normal(0, 3.0, (size, size, 3))
    canvases = {"scene": bg.copy(), "only_a": bg.copy(), "only_b": bg.copy()}
    for name, birds in (("scene", placed), ("only_a", placed[:1]), ("only_b", placed[1:])):
        for polys, _ in birds:
            _paint(canvases[name], polys, light)
    images = {name: _finish(canvas, noise) for name, canvas in canvases.items()}
    return TwoBirds(**images, background=_finish(bg, noise), box_a=placed[0][1], box_b=placed[1][1])


def image_rngs(seed: int, image_id: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The two random streams of one image: its pose (bird size, tilt, place) and its scene (the rest)."""
    return np.random.default_rng([seed, 1, image_id, 0]), np.random.default_rng([seed, 1, image_id, 1])


def scene_rngs(seed: int, scene_id: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The two random streams of two-bird scene ``scene_id`` (:func:`render_two`): its poses, and the rest.
    Apart from every image's streams (:func:`image_rngs`) and the classes' (:func:`class_specs`)."""
    return np.random.default_rng([seed, 2, scene_id, 0]), np.random.default_rng([seed, 2, scene_id, 1])


def class_index(image_id: int, params: Params) -> int:
    """The 0-based class (index into :func:`class_specs`) of 1-based image ``image_id``: images are numbered
    class by class, ``params.images_per_class`` each."""
    return (image_id - 1) // params.images_per_class


def render_image(image_id: int, params: Params = Params(), specs: list[dict] | None = None):
    """Regenerate image ``image_id`` (1-based) of a benchmark: ``(image, background, box)`` as in :func:`render`."""
    specs = specs if specs is not None else class_specs(params.num_classes, params.seed)
    spec = specs[class_index(image_id, params)]
    return render(spec, params.size, *image_rngs(params.seed, image_id))


def boxes(params: Params = Params(), placement: float | None = None) -> np.ndarray:
    """All ground-truth boxes of a benchmark, ``(n, 4)`` in image-id order, without drawing any image.

    ``placement`` (default: :data:`PLACE_P`, the benchmark's) replaces the Beta parameter of the position
    along each axis, ``1.0`` being uniform placement: the same birds (same size, tilt and side, from the same
    random streams) placed by another rule, for measuring what the placement rule does to a centre prior.
    Only the default gives the boxes that :func:`generate` writes.
    """
    if placement is not None and (isinstance(placement, bool) or not isinstance(placement, (int, float, np.number))
                                  or not math.isfinite(placement) or placement <= 0):
        raise DataError(f"Invalid placement {placement!r}: give the Beta distribution's parameter, a positive "
                        f"finite number (1.0 is uniform placement; None is the benchmark's {PLACE_P}).")
    specs = class_specs(params.num_classes, params.seed)
    n = params.num_classes * params.images_per_class
    return np.stack([_pose(specs[class_index(i, params)], image_rngs(params.seed, i)[0], params.size, placement)[1]
                     for i in range(1, n + 1)])


def file_name(spec: dict, image_id: int) -> str:
    """``NNN.Name/Name_<image_id>.jpg``, CUB's naming pattern."""
    return f"{spec['name']}/{spec['name'].split('.', 1)[1]}_{image_id:05d}.jpg"


def save_jpeg(image: np.ndarray, path, quality: int = 90) -> None:
    """Save a uint8 ``(H, W, 3)`` array as JPEG without chroma subsampling (4:4:4), so that colour does not
    bleed beyond the 8×8 block around an edge. ``path`` may be a file object.

    The JPEG is encoded in memory and written with Python's file API: Pillow's encoder, writing to a
    file itself, was seen to leave a truncated file without an error when the disk filled up.
    """
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0)
    if hasattr(path, "write"):
        path.write(buf.getvalue())
    else:
        with open(path, "wb") as f:
            f.write(buf.getvalue())


def _write_chunk(args) -> list[tuple[int, list[float]]]:
    """Worker: render and save the images ``ids``; returns their boxes."""
    ids, params, specs, images_dir = args
    out = []
    for image_id in ids:
        spec = specs[class_index(image_id, params)]
        image, _, box = render(spec, params.size, *image_rngs(params.seed, image_id))
        save_jpeg(image, Path(images_dir) / file_name(spec, image_id), params.quality)
        out.append((image_id, box.tolist()))
    return out


def _write_tables(folder: Path, params: Params, specs: list[dict], box_of: dict[int, list[float]]) -> None:
    n, k = params.num_classes, params.images_per_class
    ids = range(1, n * k + 1)
    spec_of = {i: specs[class_index(i, params)] for i in ids}
    tables = {
        "classes.txt": [f"{s['class_id']} {s['name']}" for s in specs],
        "images.txt": [f"{i} {file_name(spec_of[i], i)}" for i in ids],
        "image_class_labels.txt": [f"{i} {spec_of[i]['class_id']}" for i in ids],
        "train_test_split.txt": [f"{i} {int((i - 1) % k < k // 2)}" for i in ids],
        "bounding_boxes.txt": [f"{i} " + " ".join(f"{v:.1f}" for v in box_of[i]) for i in ids],
    }
    for name, lines in tables.items():
        (folder / name).write_text("\n".join(lines) + "\n")


def check_params(images_per_class: int = 40, size: int = 96, seed: int = 0, num_classes: int = 200,
                 quality: int = 90, workers: int | None = None) -> None:
    """Raise :class:`DataError` (one sentence) unless the generation parameters can make a benchmark."""
    params = Params(images_per_class, size, seed, num_classes, quality)
    numbers = {"images_per_class": images_per_class, "size": size, "seed": seed, "num_classes": num_classes,
               "quality": quality}
    wrong = [k for k, v in numbers.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
    if wrong:
        raise DataError(f"Invalid parameters: {', '.join(wrong)} must be integers, got "
                        f"{', '.join(repr(numbers[k]) for k in wrong)}.")
    if images_per_class < 2 or size < 32 or not 1 <= num_classes <= len(GENERA) * GENUS_SIZE:
        raise DataError(f"Invalid parameters {params}: need images_per_class >= 2, size >= 32 and "
                        f"1 <= num_classes <= {len(GENERA) * GENUS_SIZE}.")
    if size > MAX_SIZE or images_per_class > MAX_IMAGES_PER_CLASS:
        raise DataError(f"Invalid parameters {params}: need size <= {MAX_SIZE} px and images_per_class <= "
                        f"{MAX_IMAGES_PER_CLASS} (each image is drawn at {SUPERSAMPLE}x its size in memory, so a much "
                        "larger size would try to allocate tens of GiB or more).")
    if seed < 0 or not 1 <= quality <= 100:
        raise DataError(f"Invalid parameters {params}: need seed >= 0 (numpy's generators take non-negative seeds) "
                        "and 1 <= quality <= 100.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DataError(f"Invalid workers {workers!r}: give a number of worker processes >= 1 (or None).")


def generate(root: str | os.PathLike = DEFAULT_ROOTS["synthetic"], images_per_class: int = 40, size: int = 96,
             seed: int = 0, num_classes: int = 200, workers: int | None = None, progress: bool = True,
             quality: int = 90) -> tuple[Path, bool]:
    """Write the benchmark to ``root/CUB_200_2011``; returns the folder and whether anything was written.

    A complete folder with the same parameters is left alone; one with other parameters is an error.
    The images are written into a temporary folder under ``root`` that is renamed into place when
    complete, and the completion marker (holding the parameters) is written last.
    """
    params = Params(images_per_class, size, seed, num_classes, quality)
    check_params(images_per_class, size, seed, num_classes, quality, workers)
    root = Path(os.path.abspath(os.path.expanduser(root)))
    target = root / FOLDER
    command = download_command("synthetic", root)
    info = read_marker(target)
    if info is None:   # not complete yet: build it, holding the root's lock (a second process waits, then reuses it)
        with first_use_lock(root):
            info = check_absent_or_complete(target, command)
            if info is None:
                _build(root, target, params, workers, progress)
                return target, True
    if info.get("params") != asdict(params):
        raise DataError(f"{target} holds a synthetic benchmark with other parameters ({info.get('params')}). "
                        f"Use another --root, or delete {target} and run the command again.")
    return target, False


def _ignore_ctrl_c() -> None:
    """Worker initializer: leave SIGINT (Ctrl-C) to the main process, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _build(root: Path, target: Path, params: Params, workers: int | None, progress: bool) -> None:
    images_per_class, num_classes, seed = params.images_per_class, params.num_classes, params.seed
    specs = class_specs(num_classes, seed)
    with build_folder(root, FOLDER) as work, disk_errors(work):
        folder = work / FOLDER
        images_dir = folder / "images"
        for spec in specs:
            (images_dir / spec["name"]).mkdir(parents=True)
        ids = np.arange(1, num_classes * images_per_class + 1)
        chunks = [(c.tolist(), params, specs, str(images_dir)) for c in np.array_split(ids, max(1, len(ids) // 200))]
        workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        written: dict[int, list[float]] = {}
        bar = tqdm(total=len(ids), unit="img", desc="synthetic", disable=not progress, leave=False)
        with bar:
            if workers > 1:
                # Ctrl-C reaches the whole process group: the workers ignore it (one killed in the middle of the
                # pool's queue can leave shutdown waiting forever); the main process drops the queued chunks and
                # waits only for the running ones (a fraction of a second each).
                pool = ProcessPoolExecutor(workers, initializer=_ignore_ctrl_c)
                try:
                    for result in pool.map(_write_chunk, chunks):
                        written.update(result)
                        bar.update(len(result))
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
            else:
                for chunk in chunks:
                    result = _write_chunk(chunk)
                    written.update(result)
                    bar.update(len(result))
        _write_tables(folder, params, specs, written)
        publish(folder, target, {"name": "synthetic CUB-layout benchmark", "params": asdict(params),
                                 "images": int(len(ids))})


def read_params(root: str | os.PathLike) -> Params:
    """The parameters a benchmark under ``root`` was generated with (from its completion marker)."""
    path = Path(root) / FOLDER / MARKER
    try:
        return Params(**json.loads(path.read_text())["params"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{path} is missing or unreadable: generate the benchmark with "
                        f"`{download_command('synthetic', root)}`.") from None
