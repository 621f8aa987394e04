"""MASH's epsilon against the image size (spec risk 2): the two probes on the embedded images at other crop sizes.

    python -m cvpr24.pipelines.mash.epsilon_size                    # sizes 64 and 128, the base profile's budget
    python -m cvpr24.pipelines.mash.epsilon_size --sizes 64 --images cam_iid_coffee

For each embedded image (the base profile's crops and noise, regenerated at each crop size from the same
top-left corner) the two probes of MASH's rule (tau 0.8 and 0.2, the base profile's width, steps and seeds:
the pipeline's job seeds) train in parallel, one thread each, recording sigma_hat every `sigma_every` steps.
The CSV has one row per image, size and recorded step: sigma_hat of both probes, epsilon and each preset's
choice. The report adds the pipeline's own crop size (its `sigma_trace`) and draws epsilon against the size
(figure `epsilon_size`) and against the steps at every size. Probes only: no final run, no PSNR; the choice is
what the rule would do, not whether it is right (that is Table 2 and claim C8, at the pipeline's size).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

import cvpr24  # noqa: F401  (numerics pins before any kernel)
from cvpr24.core.seeding import derive_seed
from cvpr24.pipelines.mash import nodes as N
from cvpr24.pipelines.mash.fast import in_parallel
from cvpr24.pipelines.mash.method import _bsd_kwargs, bsd_job_name, fit_bsd
from cvpr24.pipelines.mash.report import choice_label
from cvpr24.pipelines.mash.speed import ROOT, embedded_images


def probe_traces(noisy, *, image_id: str, train: dict, seed: int, probe_high: float, probe_low: float) -> dict:
    """Both probes of one image trained to the end in parallel (one thread each); their sigma_hat traces."""
    kw = _bsd_kwargs(train, noisy.shape[2])
    every = int(train["sigma_every"])

    def one(tau: float) -> dict:
        return fit_bsd(noisy, tau=tau, seed=derive_seed(seed, f"{image_id}__{bsd_job_name(tau, False)}"),
                       sigma_every=every, desc=f"{image_id} probe {tau:g}", **kw)

    high, low = in_parallel(one, (probe_high, probe_low))
    return {"high": high, "low": low}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,128", help="crop sizes, multiples of 32, comma-separated")
    ap.add_argument("--images", default="", help="embedded image ids, comma-separated (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "pipelines" / "mash" / "epsilon_size.csv"))
    args = ap.parse_args(argv)
    torch.use_deterministic_algorithms(True, warn_only=True)
    params = embedded_images(args.seed)[2]
    train, sel = params["train"], params["train"]["selection"]
    rules = N.rules(sel)
    probes = {"probe_high": float(sel["probe_high"]), "probe_low": float(sel["probe_low"])}
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        model_input, _, _, groups = embedded_images(args.seed, crop_size=size)
        ids = [i for i in args.images.split(",") if i] or sorted(model_input)
        for image_id in ids:
            if image_id not in model_input:
                raise SystemExit(f"unknown embedded image {image_id!r}; known: {', '.join(sorted(model_input))}")
            start = time.perf_counter()
            out = probe_traces(model_input[image_id], image_id=image_id, train=train, seed=args.seed, **probes)
            seconds = time.perf_counter() - start
            y = model_input[image_id]
            final = abs(out["high"]["residual_std"] - out["low"]["residual_std"])  # the rule's epsilon
            for hi, lo in zip(out["high"]["sigma_trace"], out["low"]["sigma_trace"], strict=True):
                eps = abs(hi["residual_std"] - lo["residual_std"])
                rows.append({"image_id": image_id,
                             "group": groups[image_id],
                             "size": size, "shape": f"{y.shape[0]}x{y.shape[1]}x{y.shape[2]}",
                             "iterations": int(train["iterations"]), "width": int(train["width"]),
                             "step": int(hi["step"]), "sigma_hat_high": hi["residual_std"],
                             "sigma_hat_low": lo["residual_std"], "epsilon": eps, "epsilon_final": final,
                             **{f"{name}_choice": choice_label(*rule.select(eps)) for name, rule in rules.items()},
                             "seconds": seconds, "date": time.strftime("%Y-%m-%d")})
            print(f"{size}px {image_id}: epsilon {final:.2f} ({choice_label(*rules[sel['preset']].select(final))}), "
                  f"{seconds:.0f} s", flush=True)
            frame = pd.DataFrame(rows)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(args.out, index=False)  # after every image: a killed run keeps what it measured
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
