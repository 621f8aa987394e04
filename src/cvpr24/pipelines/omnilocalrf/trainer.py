"""OmniLocalRF's training loop (spec 2.1-2.6; the official `src/train.py` + `OmniLocalRFs.optimizer_step`), built
from the components of this package: `ProgressiveSchedule` decides when a frame is added, when the newest RF
refines and when the next RF is appended; `LocalRFs` holds the fields, blending weights and exposures;
`FramePoses` the jointly estimated poses; `MotionMask` the mask module; `bidirectional` the distant-frame terms.

One iteration (`Trainer.step`):
1. With probability (test frames / frames of the window) the batch is drawn from the window's TEST frames and only
   their poses are updated (photometric + flow terms): test frames are never used to fit the scene, but their
   poses must be estimated to render them.
2. Otherwise `n_views` training frames of the window (while the window grows, `newest_views` of them are drawn
   from the 4 newest frames, as the code forces the newest frames into every batch), `patches_per_view` 2x2 pixel
   patches each (columns wrap at the seam). The frames' poses, blending weights and exposures render the static
   scene (`LocalRFs.render_static`); with the mask module on (and past its warm-up) the mask's (C_dy, M) are
   composited (Eq. 10). Losses (weights in `TrainConfig.weights`): photometric L1 x lw, Eq. 11 dynamic colour,
   mask TV (dense grid of the window's frames) and binary terms, beta on the last transmittance, depth TV on far
   patches; while regularisation is on (the first n_iters_reg x frames refinement steps): flow (predicted ERP
   flow to the neighbouring frames with the current poses against the prior, x (1 - M)), monocular depth (median
   / MAD normalised inverse depth, x (1 - M)) and TensoRF's TV / L1 on the newest RF, all decayed by
   lr_factor^rf_iter.
3. Bidirectional terms (`bidirectional.active`): a previous RF p and one distant destination frame per view; the
   forward step (Eq. 5-6) on the first `bidir_patches` patches of every view, the backward step (Eq. 7, Eq. 9) on
   as many fresh patches of the destination frames; RF p has kept its own Adam and is stepped by them.
4. Optimiser steps: the newest RF (lr decayed while refining, optimiser rebuilt at every upsampling: the code's
   lr reset), the window's poses (frame 0 is the fixed world frame) and exposures, the mask planes and MLP (past
   the warm-up); the schedule's events then add a frame (pose from the previous one or the relative-pose prior,
   mask planes copied) or append an RF.

Choices where the code was not followed (intent implemented, see the pipeline README): during the mask warm-up
the output is the static render (the code adds C_dy M_raw to it); the bidirectional terms use a subset of the
batch (`bidir_patches`) to fit the CPU budget; the backward step's extra terms (beta, depth TV and Eq. 11 on the
destination rays) are left out, RF p's TV / L1 x 0.1 are kept.

Everything random draws from one seeded `torch.Generator`; a checkpoint every `checkpoint_every` iterations holds
the whole state (structure, weights, optimiser moments, generator), so a killed run resumes and ends bit-identical
to an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cvpr24.pipelines.omnilocalrf import bidirectional as B
from cvpr24.pipelines.omnilocalrf import camera, motion
from cvpr24.pipelines.omnilocalrf import losses as L
from cvpr24.pipelines.omnilocalrf.poses import FramePoses
from cvpr24.pipelines.omnilocalrf.tensorf import (
    LocalRFs,
    ProgressiveSchedule,
    TensoRFVM,
    apply_exposure,
    n_to_reso,
    n_voxel_schedule,
    render_rays,
    tensorf_regularisers,
)

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = {"photo": 0.25, "dyn_rgb": 1e-2, "dyn_tv": 3e-2, "dyn_binary": 0.1, "beta": 1e-3, "depth_tv": 1e-4,
                   "flow": 1.0, "depth": 0.05, "tv_density": 1.0, "tv_app": 0.1, "l1": 1e-3}


@dataclass
class TrainConfig:
    """Sizes, schedule, learning rates, loss weights and the ablation switches of one run (spec 2.6 names)."""

    # field (per local RF)
    grid_init: int = 16
    grid_final: int = 48
    upsample_list: tuple[int, ...] = (4, 6, 8, 10, 12)
    density_n_comp: tuple[int, int, int] = (4, 4, 4)
    app_n_comp: tuple[int, int, int] = (8, 8, 8)
    app_dim: int = 12
    feature_c: int = 32
    samples_per_ray: int = 32
    # batch
    n_views: int = 16
    patches_per_view: int = 16          # 2x2 patches: 4 rays each
    newest_views: int = 6
    bidir_patches: int = 4
    # progressive schedule
    n_init_frames: int = 3
    add_frames_every: int = 10
    n_iters_per_frame: int = 24
    n_iters_reg: int = 4
    n_overlap: int = 5
    n_max_frames: int = 15
    max_drift: float = 2.0
    lr_decay_target_ratio: float = 0.1
    # learning rates
    lr_init: float = 0.02
    lr_basis: float = 1e-3
    lr_exposure: float = 1e-3
    lr_r: float = 5e-3
    lr_t: float = 5e-3
    lr_dyn: float = 1e-2
    lr_dyn_mlp: float = 5e-4
    # mask module
    use_mask_module: bool = True
    use_mask_rgb_supervision: bool = True    # Eq. 11
    dyn_block_iter: int = 20
    dyn_levels: int = 4
    dyn_res: tuple[int, int] = (32, 64)
    dyn_hidden: int = 128
    dyn_hidden_act: str = "none"
    dyn_tv_grid: tuple[int, int] = (32, 64)
    dyn_mlp_lr_reset: bool = False           # the code decays the decoder's lr by 1e-3 per refinement, never reset
    # bidirectional optimisation
    bidirectional: bool = True
    use_forward_step: bool = True
    use_backward_step: bool = True
    use_backward_src_loss: bool = True       # Eq. 7
    forward_depth: str = "paper"             # paper (tau 0.05, D_max 1) | code (margin 2, 0.05)
    # poses
    with_preprocessed_poses: bool = False    # initialise new frames with the traj.csv relative pose ("w/ pose")
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    seed: int = 20240314
    checkpoint_every: int = 200
    log_every: int = 10

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown OmniLocalRF training keys {unknown}; known: {sorted(known)}")
        kw = dict(d)
        for key in ("upsample_list", "density_n_comp", "app_n_comp", "dyn_res", "dyn_tv_grid"):
            if key in kw:
                kw[key] = tuple(int(x) for x in kw[key])
        if "weights" in kw:
            bad = sorted(set(kw["weights"]) - set(DEFAULT_WEIGHTS))
            if bad:
                raise ValueError(f"unknown loss weights {bad}; known: {sorted(DEFAULT_WEIGHTS)}")
            kw["weights"] = {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in kw["weights"].items()}}
        cfg = cls(**kw)
        if cfg.forward_depth not in ("paper", "code"):
            raise ValueError(f"forward_depth must be 'paper' or 'code', got {cfg.forward_depth!r}")
        if cfg.samples_per_ray < 2 or cfg.samples_per_ray % 2:
            raise ValueError(f"samples_per_ray must be even and >= 2, got {cfg.samples_per_ray}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


@dataclass
class SceneTensors:
    """The arrays the trainer reads (training side only: no ground truth). images (N, H, W, 3) float in [0, 1];
    lw (N, H, W) per-pixel loss weight (sharpness x keep-mask); invdepth (N, H, W); fwd/bwd flow (N, H, W, 2) and
    validity (N, H, W); test (N,) bool; rel_prior (N, 4, 4) relative poses from traj.csv or None."""

    images: Tensor
    lw: Tensor
    invdepth: Tensor
    fwd_flow: Tensor
    fwd_valid: Tensor
    bwd_flow: Tensor
    bwd_valid: Tensor
    test: Tensor
    rel_prior: Tensor | None = None

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])


def scene_tensors(images: np.ndarray, invdepth: np.ndarray, fwd_flow: np.ndarray, fwd_valid: np.ndarray,
                  bwd_flow: np.ndarray, bwd_valid: np.ndarray, test: np.ndarray, masks: np.ndarray | None = None,
                  w2c: np.ndarray | None = None) -> SceneTensors:
    """numpy arrays of `data.OmniData` -> `SceneTensors` (sharpness per frame from the grey 8-bit image, spec 2.5;
    relative poses c2w_{k-1}^-1 c2w_k from traj.csv's world-to-camera matrices)."""
    import cv2

    sharp = np.array([L.sharpness(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)) for im in images], dtype=np.float64)
    if not np.all(np.isfinite(sharp)) or np.any(sharp <= 0):
        raise ValueError("a frame has no texture (zero Laplacian variance): its loss weight would be 0")
    lw = np.broadcast_to(sharp[:, None, None], images.shape[:3]).astype(np.float32)
    if masks is not None:
        lw = lw * masks.astype(np.float32)
    rel = None
    if w2c is not None:
        c2w = np.linalg.inv(w2c)
        rel = np.stack([np.eye(4)] + [np.linalg.inv(c2w[k - 1]) @ c2w[k] for k in range(1, len(c2w))])
        rel = torch.from_numpy(rel.astype(np.float32))

    def t(a: np.ndarray, dtype=torch.float32) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return SceneTensors(images=t(images.astype(np.float32) / 255.0), lw=t(lw), invdepth=t(invdepth),
                        fwd_flow=t(fwd_flow), fwd_valid=t(fwd_valid, torch.bool), bwd_flow=t(bwd_flow),
                        bwd_valid=t(bwd_valid, torch.bool), test=t(test, torch.bool), rel_prior=rel)


def _reproject(dirs: Tensor, depth: Tensor, c2w_src: Tensor, c2w_dst: Tensor, h: int, w: int
               ) -> tuple[Tensor, Tensor]:
    """`camera.reproject_rays` with one (source, destination) pose pair per ray: (R, 3), (R,), (R, 3|4, 4)."""
    coords, ok = camera.reproject_rays(dirs[:, None], depth[:, None], c2w_src, c2w_dst, h, w)
    return coords[:, 0], ok[:, 0]


def _sample_per_ray(images: Tensor, frames: Tensor, coords: Tensor) -> Tensor:
    """Bilinear ERP look-up (columns wrap) of images[frames[r]] at coords[r] (R, 2) -> (R, C)."""
    out = images.new_zeros(coords.shape[0], images.shape[-1])
    for f in torch.unique(frames).tolist():
        sel = frames == f
        out[sel] = camera.erp_bilinear_sample(images[f], coords[sel])
    return out


class Trainer:
    """One OmniLocalRF (or LocalRF-equivalent) run on one scene. `run(progress)` trains to the end of the schedule
    and returns the history; `export()` the trained state for evaluation (`load_model`)."""

    def __init__(self, scene: SceneTensors, cfg: TrainConfig):
        self.scene, self.cfg = scene, cfg
        self.h, self.w = scene.hw
        if cfg.n_init_frames < 2:
            raise ValueError(f"n_init_frames must be >= 2 (frame 0 is fixed), got {cfg.n_init_frames}")
        if scene.n_frames < cfg.n_init_frames + 1:
            raise ValueError(f"the scene has {scene.n_frames} frames; OmniLocalRF needs more than n_init_frames "
                             f"= {cfg.n_init_frames}")
        self.gen = torch.Generator().manual_seed(int(cfg.seed))
        torch.manual_seed(int(cfg.seed))
        self.n_samples = 6 * (cfg.samples_per_ray // 2)
        self.voxels = n_voxel_schedule(cfg.grid_init ** 3, cfg.grid_final ** 3, cfg.upsample_list)
        self._field_count = 0
        self.schedule = ProgressiveSchedule(
            scene.n_frames, n_init_frames=cfg.n_init_frames, add_frames_every=cfg.add_frames_every,
            n_overlap=cfg.n_overlap, max_drift=cfg.max_drift, n_max_frames=cfg.n_max_frames,
            n_iters_per_frame=cfg.n_iters_per_frame, n_iters_reg=cfg.n_iters_reg,
            upsample_per_frame=self.voxels,
            lr_decay_target_ratio=cfg.lr_decay_target_ratio)
        self.poses = FramePoses(0)
        self.mask = motion.MotionMask(cfg.n_init_frames, motion.MotionMaskConfig(
            levels=cfg.dyn_levels, base_size=tuple(cfg.dyn_res), hidden=cfg.dyn_hidden,
            hidden_act=cfg.dyn_hidden_act, seed=int(cfg.seed)))
        for k in range(cfg.n_init_frames):
            self._append_pose(k)
        self.rfs = LocalRFs(self._new_field, n_init_frames=cfg.n_init_frames, n_overlap=cfg.n_overlap)
        self.rf_opts = [self._rf_optimizer(self.rfs.fields[0])]
        self.pose_opt = torch.optim.Adam([g for k in range(1, cfg.n_init_frames) for g in self._pose_groups(k)],
                                         betas=(0.9, 0.99))
        self.exp_opt = torch.optim.Adam(list(self.rfs.exposure), lr=cfg.lr_exposure, betas=(0.9, 0.99))
        self.mask_plane_opt = self._mask_plane_optimizer()
        self.mask_mlp_opt = torch.optim.Adam(self.mask.mlp.parameters(), lr=cfg.lr_dyn_mlp, betas=(0.9, 0.99))
        self.iteration = 0
        self.iters_since_rf = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ construction helpers
    def _new_field(self) -> TensoRFVM:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(int(cfg.seed) * 1000 + self._field_count)
        torch.manual_seed(int(cfg.seed) * 1000 + self._field_count)  # the Linear layers draw from the global RNG
        self._field_count += 1
        return TensoRFVM(cfg.grid_init, cfg.density_n_comp, cfg.app_n_comp, cfg.app_dim, cfg.feature_c,
                         generator=gen)

    def _rf_optimizer(self, fld: TensoRFVM) -> torch.optim.Adam:
        return fld.make_optimizer(self.cfg.lr_init, self.cfg.lr_basis)

    def _mask_plane_optimizer(self) -> torch.optim.Adam:
        groups = self.mask.param_groups(self.cfg.lr_dyn, self.cfg.lr_dyn_mlp)[:-1]
        return torch.optim.Adam(groups, betas=(0.9, 0.99))

    def _append_pose(self, k: int) -> None:
        rel = None
        if self.cfg.with_preprocessed_poses and self.scene.rel_prior is not None and k > 0:
            rel = self.scene.rel_prior[k]
        self.poses.append(rel)

    def _pose_groups(self, k: int) -> list[dict[str, Any]]:
        return [{"params": [self.poses.r6[k]], "lr": self.cfg.lr_r, "frame": k},
                {"params": [self.poses.t[k]], "lr": self.cfg.lr_t, "frame": k}]

    def _add_pose_group(self, k: int) -> None:
        if k == 0:  # the world frame (frame 0) is fixed
            return
        for g in self._pose_groups(k):
            self.pose_opt.add_param_group(g)

    # ------------------------------------------------------------------ rendering
    def _c2w_per_ray(self, frames: Tensor, detach: bool = False) -> Tensor:
        uniq, inv = torch.unique(frames, return_inverse=True)
        c2w = self.poses.c2w(uniq.tolist())
        if detach:
            c2w = c2w.detach()
        return c2w[inv]

    def _render_blend(self, frames: Tensor, dirs: Tensor, *, jitter: bool, test: bool = False) -> dict[str, Tensor]:
        return self.rfs.render_static(dirs, self._c2w_per_ray(frames), self.rfs.blending_weights[frames],
                                      exposure=self.rfs.exposures(frames, test=test), n_samples=self.n_samples,
                                      jitter=jitter, generator=self.gen)

    def _render_rf(self, rf_id: int, dirs: Tensor, c2w: Tensor, frames: Tensor, *, jitter: bool = True):
        pose = self.rfs.cam_to_rf(c2w, rf_id)
        rays_d = (pose[:, :3, :3] @ dirs[..., None])[..., 0]
        out = render_rays(self.rfs.fields[rf_id], pose[:, :3, 3], rays_d, n_samples=self.n_samples, jitter=jitter,
                          generator=self.gen)
        rgb = apply_exposure(out.rgb.clamp(0, 1), self.rfs.exposures(frames).detach())
        return rgb, out

    def _patches(self, frames: list[int], n_patches: int) -> tuple[Tensor, Tensor, Tensor]:
        """(frames, cols, rows) of `n_patches` 2x2 patches per view, view-major, 4 rays per patch."""
        v = len(frames)
        j0 = torch.randint(0, self.h - 1, (v, n_patches), generator=self.gen)
        i0 = torch.randint(0, self.w, (v, n_patches), generator=self.gen)
        dj = torch.tensor([0, 0, 1, 1])
        di = torch.tensor([0, 1, 0, 1])
        rows = (j0[..., None] + dj).reshape(-1)
        cols = ((i0[..., None] + di) % self.w).reshape(-1)
        fr = torch.tensor(frames).repeat_interleave(n_patches * 4)
        return fr, cols, rows

    def _mask_on(self) -> bool:
        block = self.cfg.dyn_block_iter * (1 if self.rfs.n_rfs == 1 else 2)
        return self.cfg.use_mask_module and self.iters_since_rf > block

    # ------------------------------------------------------------------ one iteration
    def _pick_views(self, pool: list[int], growing: bool) -> list[int]:
        cfg = self.cfg
        idx = torch.randint(0, len(pool), (cfg.n_views,), generator=self.gen).tolist()
        views = [pool[i] for i in idx]
        if growing and cfg.newest_views > 0:
            newest = pool[-4:]
            pick = torch.randint(0, len(newest), (min(cfg.newest_views, cfg.n_views),), generator=self.gen).tolist()
            views[:len(pick)] = [newest[i] for i in pick]
        return views

    def _flow_term(self, frames: Tensor, cols: Tensor, rows: Tensor, dirs: Tensor, depth: Tensor, m: Tensor | None,
                   window_end: int, n_views: int) -> Tensor:
        s = self.scene
        pix = torch.stack([cols.float(), rows.float()], dim=-1)
        c2w_src = self._c2w_per_ray(frames)
        total = dirs.new_zeros(())
        for step, flow, valid in ((1, s.fwd_flow, s.fwd_valid), (-1, s.bwd_flow, s.bwd_valid)):
            nb = frames + step
            ok = (nb >= 0) & (nb < window_end)
            nb_c = nb.clamp(0, window_end - 1)
            c2w_dst = self._c2w_per_ray(nb_c)
            pred, okp = L.predicted_flow(dirs[:, None], depth[:, None], pix[:, None], c2w_src, c2w_dst, self.h,
                                         self.w)
            pred, okp = pred[:, 0], okp[:, 0]
            prior = flow[frames, rows, cols]
            pvalid = valid[frames, rows, cols] & ok & okp
            total = total + L.flow_loss(pred.view(n_views, -1, 2), prior.view(n_views, -1, 2),
                                        pvalid.view(n_views, -1), None if m is None else m.view(n_views, -1))
        return total / ((self.w + self.h) / 2)

    def step(self) -> dict[str, float]:
        cfg, s, sched = self.cfg, self.scene, self.schedule
        a0, a1 = sched.active
        window = list(range(a0, a1))
        train_frames = [f for f in window if not bool(s.test[f])]
        test_frames = [f for f in window if bool(s.test[f])]
        growing = not sched.is_refining
        is_test = bool(test_frames) and float(torch.rand((), generator=self.gen)) < len(test_frames) / len(window)
        metrics: dict[str, float] = {}
        tick = None
        if is_test:
            views = self._pick_views(test_frames, False)
            frames, cols, rows = self._patches(views, cfg.patches_per_view)
            dirs = camera.erp_pixel_to_direction(cols.float(), rows.float(), self.h, self.w)
            out = self._render_blend(frames, dirs, jitter=True, test=True)
            gt = s.images[frames, rows, cols]
            loss = cfg.weights["photo"] * L.photometric_l1(out["rgb"].clamp(0, 1), gt, s.lw[frames, rows, cols])
            if cfg.weights["flow"] > 0 and sched.rf_iter < sched.n_iters_reg:
                loss = loss + cfg.weights["flow"] * self._flow_term(frames, cols, rows, dirs, out["depth"], None, a1,
                                                                    len(views))
            self._zero_all()
            loss.backward()
            self._step_poses(set(test_frames), 1.0)
            metrics.update(loss=float(loss.detach()), test_batch=1.0)
        else:
            tick = sched.optimizer_tick(self.rfs.n_training_frames())
            decay = tick.lr_factor ** sched.rf_iter
            views = self._pick_views(train_frames, growing)
            frames, cols, rows = self._patches(views, cfg.patches_per_view)
            dirs = camera.erp_pixel_to_direction(cols.float(), rows.float(), self.h, self.w)
            out = self._render_blend(frames, dirs, jitter=True)
            gt = s.images[frames, rows, cols]
            lw = s.lw[frames, rows, cols]
            w = cfg.weights
            mask_on = self._mask_on()
            m = c_dy = None
            if mask_on:
                u, v = motion.pixel_to_plane(rows, cols, self.h, self.w)
                c_dy, m = self.mask(u, v, frames.float())
                rgb = ((1 - m[:, None]) * out["rgb"] + m[:, None] * c_dy).clamp(0, 1)
            else:
                rgb = out["rgb"].clamp(0, 1)
            photo = L.photometric_l1(rgb, gt, lw)
            loss = w["photo"] * photo
            if mask_on:
                if cfg.use_mask_rgb_supervision and w["dyn_rgb"] > 0:
                    loss = loss + w["dyn_rgb"] * motion.dynamic_colour_loss(c_dy, gt, lw, generator=self.gen)
                if w["dyn_tv"] > 0:
                    grid = self.mask.decode_grid(window, *cfg.dyn_tv_grid)
                    loss = loss + w["dyn_tv"] * motion.tv_loss(grid)
                if w["dyn_binary"] > 0:
                    loss = loss + w["dyn_binary"] * motion.binary_loss(m)
                metrics["mask_mean"] = float(m.detach().mean())
            if w["beta"] > 0:
                loss = loss + w["beta"] * L.beta_loss(out["t_last"])
            if w["depth_tv"] > 0:
                loss = loss + w["depth_tv"] * L.depth_tv_far(out["depth"].view(-1, 2, 2))
            if tick.regularize:
                if w["flow"] > 0:
                    loss = loss + w["flow"] * decay * self._flow_term(frames, cols, rows, dirs, out["depth"], m, a1,
                                                                      len(views))
                if w["depth"] > 0:
                    inv = 1.0 / out["depth"].clamp_min(1e-6)
                    prior = s.invdepth[frames, rows, cols]
                    loss = loss + w["depth"] * decay * L.mono_depth_loss(
                        inv.view(len(views), -1), prior.view(len(views), -1),
                        None if m is None else m.view(len(views), -1))
                tv, l1 = tensorf_regularisers(self.rfs.fields[-1], tv_weight_density=w["tv_density"],
                                              tv_weight_app=w["tv_app"], l1_weight=w["l1"], decay=decay)
                loss = loss + tv + l1
            prev_rf = None
            # the code: rf_iter > the newest RF's LAST scheduled upsampling (max of its scaled keys)
            if cfg.bidirectional and B.active(self.rfs.n_rfs, sched.rf_iter, max(sched.upsample_at)):
                bi, prev_rf = self._bidirectional(views, frames, cols, rows, dirs, out["depth"], tick.regularize)
                loss = loss + bi
                metrics["bidir"] = float(bi.detach())
            self._zero_all()
            loss.backward()
            self.rf_opts[-1].step()
            if prev_rf is not None:
                self.rf_opts[prev_rf].step()
            self.exp_opt.step()
            self._step_poses(set(train_frames), tick.lr_cam_factor if sched.is_refining else 1.0)
            if mask_on:
                self.mask_plane_opt.step()
                self.mask_mlp_opt.step()
            if sched.is_refining:
                for g in self.rf_opts[-1].param_groups:
                    g["lr"] *= tick.lr_factor
                for g in self.mask_mlp_opt.param_groups:
                    g["lr"] *= tick.lr_dynmlp_factor
            if tick.upsample_to is not None:
                self.rfs.fields[-1].upsample(n_to_reso(tick.upsample_to))
                self.rf_opts[-1] = self._rf_optimizer(self.rfs.fields[-1])
            with torch.no_grad():
                mse = torch.mean((rgb - gt) ** 2)
            metrics.update(loss=float(loss.detach()), photo=float(photo.detach()), psnr=float(-10 * torch.log10(mse.clamp_min(1e-10))),
                           test_batch=0.0)
            self.iters_since_rf += 1
        # schedule events
        last_t = self.poses.t[a1 - 1].detach()
        ev = sched.progress(self.iteration, float(self.rfs.dist_to_last_rf(last_t)),
                            tick.can_add_rf if tick is not None else False)
        if ev.add_frame:
            k = len(self.poses)
            self._append_pose(k)
            self._add_pose_group(k)
            self.rfs.append_frame()
            self.exp_opt.add_param_group({"params": [self.rfs.exposure[-1]], "lr": cfg.lr_exposure})
            self.mask.append_frame()
            self.mask_plane_opt = self._mask_plane_optimizer()
        if ev.append_rf:
            self.rfs.append_rf(ev.n_added_frames, self.poses.t[len(self.poses) - 1].detach())
            self.rf_opts.append(self._rf_optimizer(self.rfs.fields[-1]))
            if cfg.dyn_mlp_lr_reset:
                for g in self.mask_mlp_opt.param_groups:
                    g["lr"] = cfg.lr_dyn_mlp
            self.iters_since_rf = 0
        self.iteration += 1
        metrics.update(frames=float(sched.active[1]), rfs=float(self.rfs.n_rfs), finished=float(ev.finished))
        return metrics

    def _zero_all(self) -> None:
        for opt in [*self.rf_opts, self.pose_opt, self.exp_opt, self.mask_plane_opt, self.mask_mlp_opt]:
            opt.zero_grad(set_to_none=True)
        self.mask.zero_grad(set_to_none=True)
        self.rfs.zero_grad(set_to_none=True)
        self.poses.zero_grad(set_to_none=True)

    def _step_poses(self, frames: set[int], lr_factor: float) -> None:
        """Adam step on the given frames' poses only (others' gradients dropped); their lr decays by lr_factor."""
        for g in self.pose_opt.param_groups:
            if g["frame"] not in frames:
                for p in g["params"]:
                    p.grad = None
        self.pose_opt.step()
        if lr_factor != 1.0:
            for g in self.pose_opt.param_groups:
                if g["frame"] in frames:
                    g["lr"] *= lr_factor

    def _bidirectional(self, views: list[int], frames: Tensor, cols: Tensor, rows: Tensor, dirs: Tensor,
                       depth: Tensor, regularize: bool) -> tuple[Tensor, int]:
        cfg, s = self.cfg, self.scene
        c = self.rfs.n_rfs - 1
        bw = self.rfs.blending_weights
        lists = [torch.nonzero(bw[:, k] > 0)[:, 0].tolist() for k in range(c)]
        test_ids = torch.nonzero(s.test)[:, 0].tolist()
        p, dst = B.pick_distant_frames(lists, c, len(views), test_ids, self.gen)
        nb = cfg.bidir_patches * 4
        per_view = cfg.patches_per_view * 4
        sel = (torch.arange(len(views))[:, None] * per_view + torch.arange(nb)[None]).reshape(-1)
        src_frames = frames[sel]
        dst_frames = torch.tensor(dst).repeat_interleave(nb)
        c2w_src = self._c2w_per_ray(src_frames, detach=True)
        c2w_dst = self._c2w_per_ray(dst_frames, detach=True)
        total = dirs.new_zeros(())
        fwd_cfg = B.FORWARD_PAPER if cfg.forward_depth == "paper" else B.FORWARD_CODE

        def dst_mask(fr: Tensor, coords: Tensor) -> Tensor | None:
            if not self._mask_on():
                return None
            with torch.no_grad():
                u, v = motion.pixel_to_plane(coords[:, 1], coords[:, 0] % self.w, self.h, self.w)
                return self.mask(u, v, fr.float())[1]

        def lw_at(fr: Tensor, coords: Tensor) -> Tensor:
            ci = torch.remainder(torch.round(coords[:, 0]).long(), self.w)
            ri = torch.round(coords[:, 1]).long().clamp(0, self.h - 1)
            return s.lw[fr, ri, ci]

        if cfg.use_forward_step:
            coords, ok = _reproject(dirs[sel], depth[sel].detach(), c2w_src, c2w_dst, self.h, self.w)
            c_bar = _sample_per_ray(s.images, dst_frames, coords)
            d_dst = camera.erp_pixel_to_direction(coords[:, 0], coords[:, 1], self.h, self.w)
            c_cur, out_c = self._render_rf(c, d_dst, c2w_dst, dst_frames)
            with torch.no_grad():
                _, out_p = self._render_rf(p, d_dst, c2w_dst, dst_frames)
            loss_f, _ = B.forward_loss(c_cur[ok], c_bar[ok], out_c.depth[ok], out_p.depth[ok],
                                       lw_at(dst_frames, coords)[ok],
                                       None if (mm := dst_mask(dst_frames, coords)) is None else mm[ok],
                                       margin=fwd_cfg["margin"], max_depth=fwd_cfg["max_depth"])
            total = total + loss_f
        if cfg.use_backward_step:
            fr2, cols2, rows2 = self._patches(dst, cfg.bidir_patches)
            d2 = camera.erp_pixel_to_direction(cols2.float(), rows2.float(), self.h, self.w)
            c_p_dst, out_pd = self._render_rf(p, d2, c2w_dst, fr2)
            m_dst = dst_mask(fr2, torch.stack([cols2.float(), rows2.float()], -1))
            coords2, ok2 = _reproject(d2, out_pd.depth.detach(), c2w_dst, c2w_src, self.h, self.w)
            c_src_bar = _sample_per_ray(s.images, src_frames, coords2)
            d_src = camera.erp_pixel_to_direction(coords2[:, 0], coords2[:, 1], self.h, self.w)
            c_p_src, _ = self._render_rf(p, d_src, c2w_src, src_frames)
            with torch.no_grad():
                _, out_cs = self._render_rf(c, d_src, c2w_src, src_frames)
            m_src = dst_mask(src_frames, coords2)
            eq7, eq9, _ = B.backward_losses(c_p_dst, s.images[fr2, rows2, cols2], c_p_src[ok2], c_src_bar[ok2],
                                            out_pd.depth[ok2], out_cs.depth[ok2], s.lw[fr2, rows2, cols2],
                                            lw_at(src_frames, coords2)[ok2], m_dst,
                                            None if m_src is None else m_src[ok2])
            total = total + eq9 + (eq7 if cfg.use_backward_src_loss else 0.0)
            if regularize:
                w = cfg.weights
                tv, l1 = tensorf_regularisers(self.rfs.fields[p], tv_weight_density=w["tv_density"],
                                              tv_weight_app=w["tv_app"], l1_weight=w["l1"])
                total = total + 0.1 * (tv + l1)
        return total, p

    # ------------------------------------------------------------------ whole run, checkpoints
    def run(self, *, checkpointer=None, progress: bool = True, desc: str = "omnilocalrf",
            on_step: Callable[[int, dict[str, float]], None] | None = None,
            stop_at: int | None = None, max_iterations: int = 1_000_000) -> list[dict[str, float]]:
        from tqdm.auto import tqdm

        if checkpointer is not None:
            saved = checkpointer.latest()
            if saved is not None:
                self.load_state(saved)
                log.info("%s: resumed at iteration %d", desc, self.iteration)
        bar = tqdm(desc=desc, initial=self.iteration, disable=not progress, mininterval=1.0, leave=False,
                   unit="it")
        try:
            while True:
                metrics = self.step()
                if self.iteration % self.cfg.log_every == 0 or metrics["finished"]:
                    self.history.append({"step": float(self.iteration), **metrics})
                    bar.set_postfix(frames=int(metrics["frames"]), rfs=int(metrics["rfs"]),
                                    loss=f"{metrics['loss']:.4f}", refresh=False)
                if on_step is not None:
                    on_step(self.iteration, metrics)
                bar.update(1)
                if metrics["finished"]:
                    break
                if self.iteration >= max_iterations:
                    raise RuntimeError(f"{desc}: the schedule did not finish within {max_iterations} iterations")
                if checkpointer is not None and (self.iteration % self.cfg.checkpoint_every == 0
                                                 or self.iteration == stop_at):
                    checkpointer.save(self.iteration, self.state())
                if stop_at is not None and self.iteration >= stop_at:
                    break
        finally:
            bar.close()
        return self.history

    def state(self) -> dict[str, Any]:
        sched = {k: v for k, v in vars(self.schedule).items()}
        sched["active"] = list(sched["active"])
        sched["upsample_at"] = {int(k): int(v) for k, v in sched["upsample_at"].items()}
        sched["upsample_per_frame"] = {int(k): int(v) for k, v in sched["upsample_per_frame"].items()}
        return {
            "iteration": self.iteration, "iters_since_rf": self.iters_since_rf,
            "field_count": self._field_count,
            "schedule": sched, "n_frames": len(self.poses), "n_rfs": self.rfs.n_rfs,
            "grids": [list(f.grid_size) for f in self.rfs.fields], "pose_linked_rf": list(self.rfs.pose_linked_rf),
            "rfs": self.rfs.state_dict(), "poses": self.poses.state_dict(), "mask": self.mask.state_dict(),
            "rf_opts": [o.state_dict() for o in self.rf_opts], "pose_opt": self.pose_opt.state_dict(),
            "exp_opt": self.exp_opt.state_dict(), "mask_plane_opt": self.mask_plane_opt.state_dict(),
            "mask_mlp_opt": self.mask_mlp_opt.state_dict(), "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": {k: [h.get(k, math.nan) for h in self.history] for k in sorted({k for h in self.history
                                                                                       for k in h})},
        }

    def _grow_to(self, n_frames: int, grids: list[list[int]]) -> None:
        while len(self.poses) < n_frames:
            k = len(self.poses)
            self._append_pose(k)
            self._add_pose_group(k)
            self.rfs.append_frame()
            self.exp_opt.add_param_group({"params": [self.rfs.exposure[-1]], "lr": self.cfg.lr_exposure})
            self.mask.append_frame()
        while self.rfs.n_rfs < len(grids):
            self.rfs.fields.append(self._new_field())
            self.rf_opts.append(None)  # type: ignore[arg-type]
        for fld, g in zip(self.rfs.fields, grids, strict=True):
            if list(fld.grid_size) != list(g):
                fld.upsample(tuple(g))

    def load_state(self, st: dict[str, Any]) -> None:
        self._grow_to(int(st["n_frames"]), [list(map(int, g)) for g in st["grids"]])
        # buffers that change shape as RFs are appended
        self.rfs.blending_weights = st["rfs"]["blending_weights"].clone()
        self.rfs.world2rf = st["rfs"]["world2rf"].clone()
        self.rfs.load_state_dict(st["rfs"])
        self.rfs.pose_linked_rf = [int(x) for x in st["pose_linked_rf"]]
        self.poses.load_state_dict(st["poses"])
        self.mask.load_state_dict(st["mask"])
        self.rf_opts = [self._rf_optimizer(f) for f in self.rfs.fields]
        for opt, sd in zip(self.rf_opts, st["rf_opts"], strict=True):
            opt.load_state_dict(sd)
        self.pose_opt.load_state_dict(st["pose_opt"])
        self.exp_opt.load_state_dict(st["exp_opt"])
        self.mask_plane_opt = self._mask_plane_optimizer()
        self.mask_plane_opt.load_state_dict(st["mask_plane_opt"])
        self.mask_mlp_opt.load_state_dict(st["mask_mlp_opt"])
        for k, v in st["schedule"].items():
            setattr(self.schedule, k, v)
        self.schedule.active = list(st["schedule"]["active"])
        self.iteration, self.iters_since_rf = int(st["iteration"]), int(st["iters_since_rf"])
        self._field_count = int(st["field_count"])
        self.gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        hist = st["history"]
        keys = list(hist)
        n = len(hist[keys[0]]) if keys else 0
        self.history = [{k: float(hist[k][i]) for k in keys if not math.isnan(float(hist[k][i]))}
                        for i in range(n)]

    def export(self) -> dict[str, Any]:
        """What evaluation needs (tensors and plain values only)."""
        return {"cfg": self.cfg.to_dict(), "n_frames": len(self.poses), "grids": [list(f.grid_size)
                                                                                  for f in self.rfs.fields],
                "rfs": {k: v.detach().clone() for k, v in self.rfs.state_dict().items()},
                "poses": {k: v.detach().clone() for k, v in self.poses.state_dict().items()},
                "mask": {k: v.detach().clone() for k, v in self.mask.state_dict().items()},
                "pose_linked_rf": list(self.rfs.pose_linked_rf), "iterations": self.iteration}


class TrainedModel:
    """A finished run rebuilt for evaluation: static renders of any frame, the mask of training frames, poses."""

    def __init__(self, export: dict[str, Any], scene: SceneTensors):
        cfg = TrainConfig.from_dict(export["cfg"])
        tr = Trainer(scene, cfg)
        tr._grow_to(int(export["n_frames"]), [list(map(int, g)) for g in export["grids"]])
        tr.rfs.blending_weights = export["rfs"]["blending_weights"].clone()
        tr.rfs.world2rf = export["rfs"]["world2rf"].clone()
        tr.rfs.load_state_dict(export["rfs"])
        tr.poses.load_state_dict(export["poses"])
        tr.mask.load_state_dict(export["mask"])
        self.trainer, self.cfg, self.scene = tr, cfg, scene
        self.h, self.w = scene.hw

    @torch.no_grad()
    def c2w(self) -> np.ndarray:
        c = self.trainer.poses.c2w().numpy().astype(np.float64)
        return np.concatenate([c, np.tile(np.array([[[0, 0, 0, 1.0]]]), (len(c), 1, 1))], axis=1)

    @torch.no_grad()
    def render(self, frame: int, chunk: int = 4096) -> dict[str, np.ndarray]:
        """Static render of a whole frame (mask off; test frames use the neighbours' exposure)."""
        tr = self.trainer
        grid = camera.erp_pixel_grid(self.h, self.w).reshape(-1, 2)
        dirs = camera.erp_pixel_to_direction(grid[:, 0], grid[:, 1], self.h, self.w)
        is_test = bool(self.scene.test[frame])
        rgb, depth = [], []
        for a in range(0, len(dirs), chunk):
            d = dirs[a:a + chunk]
            fr = torch.full((len(d),), frame, dtype=torch.long)
            out = tr._render_blend(fr, d, jitter=False, test=is_test)
            rgb.append(out["rgb"].clamp(0, 1))
            depth.append(out["depth"])
        return {"rgb": torch.cat(rgb).view(self.h, self.w, 3).numpy(),
                "depth": torch.cat(depth).view(self.h, self.w).numpy()}

    @torch.no_grad()
    def mask(self, frame: int) -> np.ndarray:
        """M of the motion-mask module at every pixel of a frame (zeros when the module is off)."""
        if not self.cfg.use_mask_module:
            return np.zeros((self.h, self.w), np.float32)
        grid = camera.erp_pixel_grid(self.h, self.w).reshape(-1, 2)
        u, v = motion.pixel_to_plane(grid[:, 1], grid[:, 0], self.h, self.w)
        m = self.trainer.mask(u, v, torch.full((len(u),), float(frame)))[1]
        return m.view(self.h, self.w).numpy()
