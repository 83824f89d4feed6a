"""`hack pack` against mxnet's own `tools/im2rec.py --pack-label` on phone-sized photos.

Both are run as the command a person would type (interpreter start and imports included), on the
same N photos, to the same output size (1024x768), alternating over a few rounds; the median of
each is kept and the ratio printed last. Absolute seconds on a shared machine are noise; the
ratio of two runs taken side by side is not.

The inputs are the labeled aquarium photos (../shared/data/aquarium-scene-a, 512x384) upscaled
to a phone's 4032x3024 and saved as a phone saves them (JPEG quality 92, 4:2:0, a small EXIF
block), with their labelme JSON rescaled to match. They are made once and cached in --work.
An upscaled photo holds less detail than a real one, so its JPEG is smaller and faster to
entropy-decode; `--grain 4` adds sensor-like noise that brings the files to a real phone's
2-3 MB, a harder case for both tools.

    python bench/bench_pack.py [--n 40] [--rounds 3] [--grain 0] [--work bench/work]
"""
import argparse
import hashlib
import importlib.util
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "aquarium-scene-a"
PHONE_LONG, PHONE_SHORT = 4032, 3024  # a 12 MP phone photo
PHONE_QUALITY = 92
MAX_SIDE = 1024  # the kit's --max-side; im2rec's --resize 768 sets the short side to the same 768
IM2REC_RESIZE = MAX_SIDE * PHONE_SHORT // PHONE_LONG
WORKERS = 2
INPUTS_VERSION = 1  # bump when the way inputs are made changes, so caches are remade


def phone_size(w, h):
    return (PHONE_LONG, PHONE_SHORT) if w >= h else (PHONE_SHORT, PHONE_LONG)


def make_phone_photo(job):
    """Upscale one labeled photo to phone size and rescale its labelme JSON the same way."""
    src_json, out_dir, grain = job
    d = json.loads(src_json.read_text(encoding="utf-8"))
    src_img = src_json.parent / d["imagePath"]
    with Image.open(src_img) as im:
        im = im.convert("RGB")
        w, h = im.size
        pw, ph = phone_size(w, h)
        big = im.resize((pw, ph), Image.BICUBIC)
    if grain:
        seed = int.from_bytes(hashlib.sha256(src_img.name.encode()).digest()[:4], "little")
        noise = np.random.default_rng(seed).normal(0.0, grain, (ph, pw, 1)).astype(np.float32)
        big = Image.fromarray(np.clip(np.asarray(big, dtype=np.float32) + noise + 0.5, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 1  # Orientation: upright (the pixels already are)
    exif[0x010F] = "BenchPhone"  # Make
    exif[0x0110] = "12MP"  # Model
    out_img = out_dir / src_img.name
    big.save(out_img, format="JPEG", quality=PHONE_QUALITY, subsampling="4:2:0", exif=exif.tobytes())
    sx, sy = pw / w, ph / h
    for s in d["shapes"]:
        s["points"] = [[x * sx, y * sy] for x, y in s["points"]]
    d["imageWidth"], d["imageHeight"], d["imageData"] = pw, ph, None
    d["imagePath"] = out_img.name
    (out_dir / src_json.name).write_text(json.dumps(d, indent=2), encoding="utf-8")
    return out_img


def phone_photos(work: Path, n: int, grain: float) -> Path:
    """The folder of N phone-sized labeled photos, made on first use and reused afterwards."""
    if not SOURCE.is_dir():
        sys.exit(f"bench_pack: the sample photos are missing: {SOURCE} (the shared data folder beside the repo). "
                 "Fix: run from a checkout that has ../shared/data/aquarium-scene-a.")
    sources = sorted(SOURCE.glob("*.json"))
    if len(sources) < n:
        sys.exit(f"bench_pack: --n {n} but {SOURCE} has only {len(sources)} labeled photos.")
    out = work / (f"phone-n{n}" + (f"-grain{grain:g}" if grain else ""))
    stamp = out / ".made"  # not *.json: that is a label file
    want = {"version": INPUTS_VERSION, "n": n, "grain": grain, "size": [PHONE_LONG, PHONE_SHORT],
            "quality": PHONE_QUALITY}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"making {n} phone-sized photos in {out} (once) ...", flush=True)
    with ProcessPoolExecutor(WORKERS) as ex:
        list(ex.map(make_phone_photo, [(s, out, grain) for s in sources[:n]]))
    stamp.write_text(json.dumps(want))
    return out


def write_im2rec_list(photos: Path, classes, lst: Path):
    """im2rec's detection .lst: index, 4, 5, width, height, then cls x1 y1 x2 y2 (normalized) per box, path.
    Photos without boxes are left out, as `hack pack` leaves them out. Returns the photo names, in order."""
    lines, names = [], []
    for js in sorted(photos.glob("*.json")):
        d = json.loads(js.read_text(encoding="utf-8"))
        if not d["shapes"]:
            continue
        w, h = d["imageWidth"], d["imageHeight"]
        label = [4, 5, w, h]
        for s in d["shapes"]:
            xs, ys = [p[0] for p in s["points"]], [p[1] for p in s["points"]]
            label += [classes.index(s["label"]), min(xs) / w, min(ys) / h, max(xs) / w, max(ys) / h]
        lines.append("\t".join([str(len(lines))] + [f"{v:.6f}" for v in label] + [d["imagePath"]]))
        names.append(d["imagePath"])
    lst.write_text("\n".join(lines) + "\n")
    return names


def timed(cmd, log: Path):
    """(wall seconds, CPU seconds of the command and every process it waited for)."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    took = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.exit(f"bench_pack: failed ({r.returncode}): {' '.join(map(str, cmd))}\n{log.read_text()[-2000:]}")
    return took, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)


def record_images(rec: Path):
    """The JPEG bytes of each record of an indexed .rec, in index order."""
    import mxnet as mx

    r = mx.recordio.MXIndexedRecordIO(str(rec.with_suffix(".idx")), str(rec), "r")
    images = [mx.recordio.unpack(r.read_idx(key))[1] for key in sorted(r.keys)]
    r.close()
    return images


def psnr_vs_reference(jpeg: bytes, photo: Path) -> float:
    """PSNR of a packed image against the photo decoded whole and resized with Lanczos."""
    out = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
    with Image.open(photo) as im:
        ref = np.asarray(im.convert("RGB").resize((out.shape[1], out.shape[0]), Image.LANCZOS), dtype=np.float64)
    return float(10 * np.log10(255 ** 2 / np.mean((out - ref) ** 2)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_rounds(commands, rounds, work):
    """Run each (name, command, before, after) in turn, alternating the order every round; `before`
    clears the last output, `after` looks at the new one. Returns {name: [(wall s, CPU s), ...]}."""
    runs = {name: [] for name, *_ in commands}
    for r in range(rounds):
        for name, cmd, before, after in (commands if r % 2 == 0 else commands[::-1]):
            before()
            runs[name].append(timed(cmd, work / f"{name}.log"))
            after()
        print(f"round {r + 1}: " + ", ".join(f"{name} {runs[name][-1][0]:.2f} s ({runs[name][-1][1]:.2f} s CPU)"
                                             for name in runs), flush=True)
    return runs


def packed_images(kit_out: Path, im2rec_dir: Path, names):
    """{photo name: JPEG} from each tool's output, after checking both packed every photo at one size."""
    kit = {}
    for split in ("train", "val"):
        records = json.loads((kit_out / "manifest.json").read_text())["records"][split]
        for r, jpeg in zip(records, record_images(kit_out / f"{split}.rec")):
            kit[Path(r["source"]).with_suffix(".jpg").name] = jpeg
    im2rec = dict(zip(names, record_images(im2rec_dir / "phone.rec")))
    if len(kit) != len(names) or len(im2rec) != len(names):
        sys.exit(f"bench_pack: packed {len(kit)} (kit) and {len(im2rec)} (im2rec) of {len(names)} photos.")
    size = lambda jpeg: Image.open(io.BytesIO(jpeg)).size
    differ = [name for name in names if size(kit[name]) != size(im2rec[name])]
    if differ:
        sys.exit(f"bench_pack: output sizes differ for {len(differ)} photos, e.g. {differ[0]}: "
                 f"kit {size(kit[differ[0]])}, im2rec {size(im2rec[differ[0]])}.")
    return kit, im2rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="Photos to pack.")
    ap.add_argument("--rounds", type=int, default=3, help="Runs of each tool, alternating; the median counts.")
    ap.add_argument("--grain", type=float, default=0.0, help="Sensor-like noise (std, 0-255 scale) in the inputs.")
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "work", help="Cache and scratch folder.")
    args = ap.parse_args()
    work = args.work.resolve()
    photos = phone_photos(work, args.n, args.grain)
    classes = (SOURCE / "labels.txt").read_text().split()
    labels = work / "labels.txt"
    labels.write_text("\n".join(classes) + "\n")

    kit_out = work / "kit-out"
    kit_cmd = [Path(sys.executable).parent / "hack", "pack", photos, "--out", kit_out, "--max-side", str(MAX_SIDE),
               "--workers", str(WORKERS), "--labels", labels]
    im2rec_dir = work / "im2rec-out"  # im2rec packs every <prefix>*.lst in the prefix's folder: keep it alone
    shutil.rmtree(im2rec_dir, ignore_errors=True)
    im2rec_dir.mkdir(parents=True)
    names = write_im2rec_list(photos, classes, im2rec_dir / "phone.lst")  # the photos both tools pack
    im2rec_py = Path(importlib.util.find_spec("mxnet").origin).parent / "tools" / "im2rec.py"
    im2rec_cmd = [sys.executable, im2rec_py, "--pack-label", "--resize", str(IM2REC_RESIZE), "--quality", "95",
                  "--num-thread", str(WORKERS), im2rec_dir / "phone", photos]

    for f in photos.iterdir():  # both runs then read from the page cache, not the disk
        f.read_bytes()
    train_sha = set()  # the kit's train.rec of each round: one value if the output is deterministic
    runs = run_rounds([
        ("kit", kit_cmd, lambda: shutil.rmtree(kit_out, ignore_errors=True),
         lambda: train_sha.add(sha256(kit_out / "train.rec"))),
        ("im2rec", im2rec_cmd, lambda: [(im2rec_dir / f"phone{s}").unlink(missing_ok=True) for s in (".rec", ".idx")],
         lambda: None),
    ], args.rounds, work)
    kit_images, im2rec_images = packed_images(kit_out, im2rec_dir, names)

    n = len(names)
    (kit_s, kit_cpu), (im2rec_s, im2rec_cpu) = (
        [statistics.median(v) for v in zip(*runs[name])] for name in ("kit", "im2rec"))
    sample = names[:: max(1, n // 5)][:5]
    kit_psnr = statistics.mean(psnr_vs_reference(kit_images[name], photos / name) for name in sample)
    im2rec_psnr = statistics.mean(psnr_vs_reference(im2rec_images[name], photos / name) for name in sample)
    mb = statistics.mean((photos / name).stat().st_size for name in names) / 1e6
    sizes = sorted({Image.open(io.BytesIO(b)).size for b in kit_images.values()})
    print(f"inputs: {n} labeled photos {PHONE_LONG}x{PHONE_SHORT} (mean {mb:.1f} MB), grain {args.grain:g}; "
          f"{os.cpu_count()} cores; {args.rounds} rounds each, median")
    print(f"output: {', '.join(f'{w}x{h}' for w, h in sizes)} from both; "
          f"kit train.rec identical across rounds: {'yes' if len(train_sha) == 1 else 'NO'}")
    print(f"pixels vs full decode + Lanczos ({len(sample)} photos): kit {kit_psnr:.1f} dB, im2rec {im2rec_psnr:.1f} dB PSNR")
    print("kit:    " + " ".join(map(str, kit_cmd)))
    print("im2rec: " + " ".join(map(str, im2rec_cmd)))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine makes wall times noisier)")
    print(f"hack pack   {kit_s:6.2f} s  {n / kit_s:6.1f} images/s   CPU {kit_cpu:6.2f} s")
    print(f"im2rec.py   {im2rec_s:6.2f} s  {n / im2rec_s:6.1f} images/s   CPU {im2rec_cpu:6.2f} s")
    print(f"CPU-seconds ratio (im2rec / kit, less sensitive to other load): {im2rec_cpu / kit_cpu:.2f}")
    print(f"RATIO pack_vs_im2rec {im2rec_s / kit_s:.2f}")


if __name__ == "__main__":
    main()
