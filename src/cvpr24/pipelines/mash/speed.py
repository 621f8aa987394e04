"""MASH per image: the straightforward three sequential trainings against the fast path, same images, same run.

    python -m cvpr24.pipelines.mash.speed                       # paper budget: 700 steps, width 48
    python -m cvpr24.pipelines.mash.speed --iterations 500 --width 32 --images gauss_b0_camera

For each embedded image (the base profile's crops, regenerated from its parameters): the straightforward
implementation (probe tau 0.8, probe tau 0.2, then the chosen run, one after the other, one thread each, as
the pipeline's Table 5 counts them; on `--two-thread-images` also with two threads each),
`method.mash_fast` (probes in parallel, paused after a fixed share of the budget, the chosen run on both
cores, continuing its probe where the rule picks one) and `fast.mash_adaptive` (the same, with probes that
stop once epsilon has settled). All use the same seeds, so their outputs differ only by the thread count's
rounding and by a different choice when a short probe mis-reads epsilon; the CSV records the choice, PSNR
and seconds of each. Table 5 of the MASH report and benchmarks/README.md
read `pipelines/mash/speed.csv`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

import cvpr24  # noqa: F401  (numerics pins before any kernel)
from cvpr24.core import metrics as M
from cvpr24.core.seeding import derive_seed
from cvpr24.pipelines.mash import nodes as N
from cvpr24.pipelines.mash.fast import ADAPTIVE, mash_adaptive
from cvpr24.pipelines.mash.method import _bsd_kwargs, bsd_job_name, fit_bsd, mash_fast
from cvpr24.pipelines.mash.report import choice_label

ROOT = Path(__file__).resolve().parents[4]
DEFAULT_IMAGES = ["gauss_b1_astronaut", "cam_full_cell", "cam_iid_coffee", "gauss_b0_camera"]  # high, medium, near 1.5, low


def embedded_images(seed: int = 0, crop_size: int | None = None) -> tuple[dict, dict, dict, pd.Series]:
    """The base profile's noisy crops, clean references, parameters and each image's noise group (as the
    pipeline makes them; `crop_size` cuts the same crops at another size)."""
    params = yaml.safe_load((ROOT / "conf/base/parameters/mash.yml").read_text())["mash"]
    data = params["data"] if crop_size is None else {**params["data"], "crop_size": int(crop_size)}
    clean, noisy, manifest = N.ingest(data, {"seed": seed})
    model_input, reference, _, _ = N.preprocess(clean, noisy, manifest, params["preprocess"], params["train"])
    groups = manifest.drop_duplicates("sample_id").set_index("sample_id")["group"]
    return model_input, reference, params, groups


def straightforward(noisy: np.ndarray, *, image_id: str, train: dict, rule, seed: int,
                    probe_high: float, probe_low: float, threads: int = 1) -> dict:
    """Probe, probe, final: three full trainings one after the other, on `threads` threads (one: today's
    pipeline, whose jobs are single-thread)."""
    kw = _bsd_kwargs(train, noisy.shape[2])
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _straightforward(noisy, image_id=image_id, seed=seed, rule=rule, kw=kw,
                                probe_high=probe_high, probe_low=probe_low)
    finally:
        torch.set_num_threads(previous)


def _straightforward(noisy: np.ndarray, *, image_id: str, seed: int, rule, kw: dict,
                     probe_high: float, probe_low: float) -> dict:
    start = time.perf_counter()
    sig = {}
    for tau in (probe_high, probe_low):
        out = fit_bsd(noisy, tau=tau, seed=derive_seed(seed, f"{image_id}__{bsd_job_name(tau, False)}"), **kw)
        sig[tau] = out["residual_std"]
    epsilon = abs(sig[probe_high] - sig[probe_low])
    tau, lps = rule.select(epsilon)
    out = fit_bsd(noisy, tau=tau, lps=lps, seed=derive_seed(seed, f"{image_id}__{bsd_job_name(tau, lps)}"), **kw)
    return {"denoised": out["denoised"], "epsilon": epsilon, "tau": tau, "lps": lps,
            "seconds": time.perf_counter() - start}


def choice(out: dict) -> str:
    return choice_label(out["tau"], out["lps"])


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=700, help="training steps per run (paper budget: 700)")
    ap.add_argument("--width", type=int, default=48, help="U-Net width (paper: 48)")
    ap.add_argument("--probe-fractions", default="1.0",
                    help="shares of the budget the fast path's probes train, one fast variant each (1.0: full "
                         "probes, the straightforward epsilon exactly; empty: none)")
    ap.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True,
                    help="also the fast path with probes that stop once epsilon has settled (fast.ADAPTIVE)")
    ap.add_argument("--two-thread-images", default=DEFAULT_IMAGES[0],
                    help="images whose straightforward runs are also timed with two threads each (comma-separated)")
    ap.add_argument("--images", default=",".join(DEFAULT_IMAGES), help="embedded image ids, comma-separated")
    ap.add_argument("--preset", default=None, help="selection preset (default: the base profile's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "pipelines" / "mash" / "speed.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    model_input, reference, params, _ = embedded_images(args.seed)
    train = {**params["train"], "iterations": args.iterations, "width": args.width}
    fractions = [float(f) for f in args.probe_fractions.split(",") if f]
    two_thread = {i for i in args.two_thread_images.split(",") if i}
    sel = train["selection"]
    preset = args.preset or sel["preset"]
    rule = N.rules(sel)[preset]
    probes = {"probe_high": float(sel["probe_high"]), "probe_low": float(sel["probe_low"])}
    rows = []
    for image_id in args.images.split(","):
        if image_id not in model_input:
            raise SystemExit(f"unknown embedded image {image_id!r}; known: {', '.join(sorted(model_input))}")
        y, x = model_input[image_id], reference[image_id]
        common = {"image_id": image_id, "iterations": args.iterations, "width": args.width,
                  "size": f"{y.shape[0]}x{y.shape[1]}x{y.shape[2]}", "preset": preset,
                  "date": time.strftime("%Y-%m-%d")}
        print(f"{image_id}: straightforward ...", flush=True)
        slow = straightforward(y, image_id=image_id, train=train, rule=rule, seed=args.seed, **probes)
        base = {**common, "variant": "straightforward", "threads": "1 per run, the three runs in sequence",
                "probe_steps": args.iterations, "seconds": slow["seconds"], "epsilon": slow["epsilon"],
                "choice": choice(slow), "reused_probe": False,
                "psnr": M.psnr(slow["denoised"], x.astype(np.float32))}
        rows.append(base)
        print(f"{image_id}: {slow['seconds']:.1f} s", flush=True)
        if image_id in two_thread:
            print(f"{image_id}: straightforward, two threads ...", flush=True)
            slow2 = straightforward(y, image_id=image_id, train=train, rule=rule, seed=args.seed, threads=2, **probes)
            rows.append({**common, "variant": "straightforward, 2 threads",
                         "threads": "2 per run, the three runs in sequence", "probe_steps": args.iterations,
                         "seconds": slow2["seconds"], "epsilon": slow2["epsilon"], "choice": choice(slow2),
                         "reused_probe": False, "psnr": M.psnr(slow2["denoised"], x.astype(np.float32))})
            print(f"{image_id}: {slow2['seconds']:.1f} s", flush=True)
        for fraction in fractions:
            steps = max(1, min(args.iterations, round(fraction * args.iterations)))
            with tempfile.TemporaryDirectory(prefix="mash_fast_") as tmp:
                fast = mash_fast(y, image_id=image_id, train=train, rule=rule, seed=args.seed, directory=tmp,
                                 probe_steps=steps, threads=2, **probes)
            rows.append(_fast_row(common, f"fast, probes {steps} steps", fast, x, base, probe_steps=steps))
        if args.adaptive:
            with tempfile.TemporaryDirectory(prefix="mash_adaptive_") as tmp:
                fast = mash_adaptive(y, image_id=image_id, train=train, rule=rule, seed=args.seed, directory=tmp,
                                     threads=2, **probes)
            rows.append(_fast_row(common, "fast, adaptive probes", fast, x, base, probe_steps=fast["stopped_at"],
                                  adaptive=", ".join(f"{k} {v:g}" for k, v in ADAPTIVE.items())))
        frame = _write(rows, args.out)  # after every image: a killed run keeps what it measured
    print(frame[["image_id", "variant", "seconds", "time_share", "choice", "psnr_difference_db"]]
          .round(3).to_string(index=False))
    return frame


def _fast_row(common: dict, variant: str, fast: dict, clean: np.ndarray, base: dict, *, probe_steps: int,
              **extra) -> dict:
    """One CSV row of a fast-path variant (its timing split, choice and PSNR), printed against the
    straightforward run of the same image."""
    psnr = M.psnr(fast["denoised"], clean.astype(np.float32))
    print(f"{common['image_id']}: {variant} (probes {probe_steps} steps) {fast['seconds']:.1f} s, {choice(fast)}, "
          f"PSNR {psnr - base['psnr']:+.3f} dB against straightforward", flush=True)
    return {**common, "variant": variant, "threads": "probes 1 each in parallel, final run 2",
            "probe_steps": int(probe_steps), "seconds": fast["seconds"], "probe_s": fast["probe_seconds"],
            "final_s": fast["final_seconds"], "epsilon": fast["epsilon"], "choice": choice(fast),
            "reused_probe": fast["reused_probe"], "psnr": psnr, **extra}


def _write(rows: list[dict], out: str) -> pd.DataFrame:
    """The measurements with each variant's time and PSNR relative to the one-thread straightforward run."""
    frame = pd.DataFrame(rows)
    ref = frame[frame["variant"] == "straightforward"].set_index("image_id")
    frame["time_share"] = frame["seconds"] / frame["image_id"].map(ref["seconds"])
    frame["psnr_difference_db"] = frame["psnr"] - frame["image_id"].map(ref["psnr"])
    frame["same_choice"] = frame["choice"] == frame["image_id"].map(ref["choice"])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    return frame


if __name__ == "__main__":
    main()
