"""The static slider (:mod:`sfam_lite.slider`): the HTML parsed back with html.parser (the DOM contract the book's
browser test relies on), the frames decoded back with PIL and compared with the inputs, unique ids, no external
reference, size bounds, determinism across processes, the errors; and, where Chromium is installed, the script
run in a real browser."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfam_lite.slider import StaticSlider, encode_png, static_slider

ROOT = Path(__file__).resolve().parents[1]
DATA_URI = re.compile(r"data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=]+")


class Tree(HTMLParser):
    """Every start tag with its attributes and nesting depth, the text inside each element, the scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements, self.stack, self.scripts = [], [], []

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "depth": len(self.stack), "text": "",
                   "parents": [e["tag"] + "." + e["attrs"].get("class", "") for e in self.stack]}
        self.elements.append(element)
        if tag not in ("img", "input"):          # void elements have no end tag
            self.stack.append(element)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1]["tag"] == tag, f"unbalanced </{tag}>"
        self.stack.pop()

    def handle_data(self, data):
        if self.stack:
            if self.stack[-1]["tag"] == "script":
                self.scripts.append(data)
            for e in self.stack:
                e["text"] += data


def parse(snippet: str) -> Tree:
    tree = Tree()
    tree.feed(snippet)
    tree.close()
    assert not tree.stack, "unclosed elements"
    return tree


def script_array(script: str, name: str):
    """The JSON array the script assigns to the one-letter variable ``name``."""
    match = re.search(rf"[,\s]{name}=(\[.*?\])[,;]", script)
    assert match, f"no array {name} in the script"
    return json.loads(match.group(1))


def decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"))


def random_frames(n=5, h=12, w=20, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


VALUES = [0.05, 0.2, 0.35, 0.5, 0.95]


def test_structure_follows_the_dom_contract():
    frames = random_frames()
    readouts = [f"threshold {v:.2f} — IoU {0.1 * i:.2f}" for i, v in enumerate(VALUES)]
    out = static_slider(frames, VALUES, label="threshold", readouts=readouts, start=2, title="a <b>pair</b>")
    assert isinstance(out, StaticSlider) and out._repr_html_() == out.html
    tree = parse(out.html)
    root = tree.elements[0]
    assert root["tag"] == "div" and root["attrs"]["class"] == "sfam-slider" and root["depth"] == 0
    assert all(e["depth"] >= 1 for e in tree.elements[1:]), "everything lies inside the root div"
    ranges = [e for e in tree.elements if e["tag"] == "input"]
    imgs = [e for e in tree.elements if e["tag"] == "img"]
    readout = [e for e in tree.elements if "sfam-slider-readout" in e["attrs"].get("class", "").split()]
    assert len(ranges) == len(imgs) == len(readout) == len(tree.scripts) == 1
    r = ranges[0]["attrs"]
    assert (r["type"], r["min"], r["max"], r["step"], r["value"]) == ("range", "0", "4", "1", "2")
    assert readout[0]["text"] == readouts[2]
    assert np.array_equal(decode(imgs[0]["attrs"]["src"]), frames[2])          # the start frame is shown
    title = [e for e in tree.elements if e["attrs"].get("class") == "sfam-slider-title"]
    assert title[0]["text"] == "a <b>pair</b>"                                # escaped text, not markup
    ids = [e["attrs"]["id"] for e in tree.elements if "id" in e["attrs"]]
    assert len(ids) == len(set(ids)) == 4
    script = tree.scripts[0]
    for element_id in ids[1:]:
        assert f'document.getElementById("{element_id}")' in script
    assert 'addEventListener("input"' in script and 'addEventListener("change"' in script
    assert script_array(script, "t") == readouts


def test_frames_decode_to_the_inputs():
    many = random_frames()                                                  # > 256 colours: stored as RGB
    rng = np.random.default_rng(1)
    few = [rng.integers(0, 4, (9, 7, 3), dtype=np.uint8) * 60 for _ in range(3)]   # <= 64 colours: a palette
    grey_float = [rng.random((6, 8)) for _ in range(2)]
    for frames in (many, few):
        tree = parse(static_slider(frames, range(len(frames))).html)
        sources, order = script_array(tree.scripts[0], "s"), script_array(tree.scripts[0], "f")
        assert [decode(sources[k]).tolist() for k in order] == [f.tolist() for f in frames]
    with Image.open(io.BytesIO(encode_png(few[0]))) as im:
        assert im.mode == "P"                                                # one byte per pixel
    tree = parse(static_slider(grey_float, [0, 1]).html)
    sources = script_array(tree.scripts[0], "s")
    for uri, f in zip(sources, grey_float):
        expected = np.round(f * 255).astype(np.uint8)
        assert np.array_equal(decode(uri)[..., 0], expected)


def test_encoded_bytes_and_pil_images_are_used_as_given():
    frames = random_frames(2)
    png = encode_png(frames[0])
    buffer = io.BytesIO()
    Image.fromarray(frames[1]).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    tree = parse(static_slider([png, jpeg, Image.fromarray(frames[0])], [1, 2, 3]).html)
    sources = script_array(tree.scripts[0], "s")
    assert sources[0] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert sources[1] == "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    assert script_array(tree.scripts[0], "f") == [0, 1, 0]                 # the PIL image equals frame 0


def test_identical_frames_are_stored_once():
    a, b = random_frames(2)
    out = static_slider([a, a, b, a], [1, 2, 3, 4])
    tree = parse(out.html)
    assert out.n_frames == 4 and out.n_images == 2
    assert script_array(tree.scripts[0], "f") == [0, 0, 1, 0]
    assert len(DATA_URI.findall(out.html)) == 3                              # two in the array, one in <img>


def test_ids_differ_between_calls_even_for_the_same_input():
    frames = random_frames(3)
    first, second = (static_slider(frames, [1, 2, 3]) for _ in range(2))
    ids = [[e["attrs"]["id"] for e in parse(o.html).elements if "id" in e["attrs"]] for o in (first, second)]
    assert not set(ids[0]) & set(ids[1])


def test_no_external_reference():
    out = static_slider(random_frames(), VALUES, readouts=["see http://example.org"] * 4 + ["ok"])
    assert "http" in out.html                                               # the readout text itself ...
    text = DATA_URI.sub("DATA", static_slider(random_frames(), VALUES).html)
    assert "http" not in text and "//" not in text                          # ... but nothing in the markup
    assert "<link" not in text and "import(" not in text and "fetch(" not in text
    srcs = [e["attrs"]["src"] for e in parse(out.html).elements if "src" in e["attrs"]]
    assert srcs and all(s.startswith("data:image/") for s in srcs)


def test_readouts_cannot_close_the_script():
    evil = "</script><script>alert(1)</script> & <!--"
    out = static_slider(random_frames(2), [0, 1], readouts=[evil, "b"])
    assert out.html.count("</script>") == 1
    tree = parse(out.html)
    assert len(tree.scripts) == 1 and script_array(tree.scripts[0], "t") == [evil, "b"]
    readout = [e for e in tree.elements if e["attrs"].get("class") == "sfam-slider-readout"][0]
    assert readout["text"] == evil


def test_size_bounds():
    frames = random_frames(4, 30, 40)
    out = static_slider(frames, [1, 2, 3, 4])
    sources = script_array(parse(out.html).scripts[0], "s")
    payload = sum(len(u) for u in sources) + len(sources[0])     # every frame in the array, the first in <img> too
    assert out.size_bytes == len(out.html.encode("utf-8"))
    assert payload < out.size_bytes < payload + 2000             # plus less than 2 kB of markup and script
    with pytest.raises(ValueError, match="above max_bytes"):
        static_slider(frames, [1, 2, 3, 4], max_bytes=payload // 2)
    assert "kB" in repr(out) and "4 positions" in repr(out)


def test_colors_reduce_the_palette():
    frames = random_frames(2, 20, 20)
    tree = parse(static_slider(frames, [0, 1], colors=16).html)
    for uri in script_array(tree.scripts[0], "s"):
        assert len(np.unique(decode(uri).reshape(-1, 3), axis=0)) <= 16


def test_reduced_frames_share_one_palette_so_unchanged_pixels_keep_their_colour():
    """A panel that is the same in every frame (chapter 9's query image) is drawn in the same colours at every
    position of the slider, while the panel that changes still changes. With a palette per frame, the median cut
    of each frame moved the unchanged panel's colours too."""
    rng = np.random.default_rng(1)
    still = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    frames = [np.concatenate([still, rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) // (k + 1)], axis=1)
              for k in range(4)]
    tree = parse(static_slider(frames, [0, 1, 2, 3], colors=24).html)
    decoded = [decode(script_array(tree.scripts[0], "s")[k]) for k in script_array(tree.scripts[0], "f")]
    assert all(np.array_equal(d[:, :24], decoded[0][:, :24]) for d in decoded[1:])
    assert not np.array_equal(decoded[0][:, 24:], decoded[3][:, 24:])
    colours = np.unique(np.concatenate([d.reshape(-1, 3) for d in decoded]), axis=0)
    assert len(colours) <= 24                                   # one palette of at most `colors` for all frames
    assert np.abs(decoded[0][:, :24].astype(int) - still).mean() < 40     # and it still looks like the input


def test_same_calls_give_the_same_html_in_a_fresh_process():
    # the module alone (no torch to import), with different hash seeds: nothing may depend on hash() or time
    code = ("import importlib.util, hashlib, sys, numpy as np\n"
            f"spec = importlib.util.spec_from_file_location('slider', {str(ROOT / 'sfam_lite' / 'slider.py')!r})\n"
            "m = importlib.util.module_from_spec(spec); sys.modules['slider'] = m; spec.loader.exec_module(m)\n"
            "f = [np.full((4, 5, 3), i * 40, np.uint8) for i in range(3)]\n"
            "a = m.static_slider(f, [1, 2, 3]).html; b = m.static_slider(f, [1, 2, 3], label='t').html\n"
            "print(hashlib.sha256((a + b).encode()).hexdigest())")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                           env={**os.environ, "PYTHONHASHSEED": seed}) for seed in ("1", "2")]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout.strip()) == 64


@pytest.mark.parametrize("frames, values, kwargs, error, match", [
    ([], [], {}, ValueError, "frames is empty"),
    ("abc", [1, 2, 3], {}, TypeError, "sequence of images"),
    (random_frames(3), [1, 2], {}, ValueError, "3 frames but 2 values"),
    (random_frames(3), [1, 3, 2], {}, ValueError, "increase strictly"),
    (random_frames(3), [1, 1, 2], {}, ValueError, "increase strictly"),
    (random_frames(2), [1, float("nan")], {}, ValueError, "not a finite number"),
    (random_frames(2), [1, "2"], {}, ValueError, "not a finite number"),
    (random_frames(2), [1, 2], {"readouts": ["a"]}, ValueError, "2 frames but 1 readouts"),
    (random_frames(2), [1, 2], {"readouts": ["a", 3]}, TypeError, "readouts must be strings"),
    (random_frames(2), [1, 2], {"start": 2}, ValueError, "start must be a frame index"),
    (random_frames(2), [1, 2], {"colors": 1}, ValueError, "colors must be"),
    (random_frames(2), [1, 2], {"scale": 0}, ValueError, "scale must be"),
    ([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))], [1, 2], {}, ValueError, "same size"),
    ([np.full((4, 4), 2.0)], [1], {}, ValueError, r"must lie in \[0, 1\]"),
    ([np.full((4, 4), np.nan)], [1], {}, ValueError, "NaN"),
    ([np.zeros((4, 4, 2))], [1], {}, ValueError, "channels last"),
    ([np.full((4, 4), 300)], [1], {}, ValueError, "outside 0..255"),
    ([b"GIF89a"], [1], {}, ValueError, "neither PNG nor JPEG"),
    ([b"\x89PNG\r\n\x1a\n broken"], [1], {}, ValueError, "does not decode"),
    ([["a", "b"]], [1], {}, TypeError, "numeric"),
])
def test_bad_input_is_refused_with_a_clear_error(frames, values, kwargs, error, match):
    with pytest.raises(error, match=match):
        static_slider(frames, values, **kwargs)


def _chromium():
    exe = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None, None
    return (exe, sync_playwright) if exe.exists() else (None, None)


@pytest.mark.skipif(_chromium()[0] is None, reason="needs Debian's chromium (/usr/bin/chromium) and playwright")
def test_moving_the_range_in_chromium_changes_image_and_readout(tmp_path):
    exe, sync_playwright = _chromium()
    frames = random_frames(3, 10, 10)
    readouts = ["first", "second", "third"]
    one = static_slider(frames, [0.1, 0.2, 0.3], readouts=readouts)
    two = static_slider(frames[::-1], [0.1, 0.2, 0.3], readouts=["x", "y", "z"])   # two sliders on one page
    page_file = tmp_path / "page.html"
    page_file.write_text("<!DOCTYPE html><html><body>" + one.html + two.html + "</body></html>")
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(exe), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_file.as_uri())
            roots = page.locator("div.sfam-slider")
            assert roots.count() == 2

            def state(i):
                root = roots.nth(i)
                return root.locator("img").get_attribute("src"), root.locator(".sfam-slider-readout").inner_text()

            start = state(0), state(1)
            assert start[0][1] == "first" and start[1][1] == "x"
            rng = roots.nth(0).locator("input[type=range]")
            rng.focus()
            page.keyboard.press("ArrowRight")                                 # a user's move: input + change
            moved = state(0)
            assert moved[1] == "second" and moved[0] != start[0][0]
            assert np.array_equal(decode(moved[0]), frames[1])
            for event, index, text in (("input", 2, "third"), ("change", 0, "first")):
                rng.evaluate(f"(r, v) => {{ r.value = v; r.dispatchEvent(new Event('{event}')); }}", str(index))
                src, shown = state(0)
                assert shown == text and np.array_equal(decode(src), frames[index])
            assert state(1) == start[1], "the second slider did not move with the first"
        finally:
            browser.close()
    assert not errors, errors
