"""OmniLocalRF's (LocalRF's) jointly estimated camera poses (spec 2.1 "Poses"), after the official code's
`append_frame` / `get_cam2world`: one rotation in the 6D representation (two matrix columns, Gram-Schmidt at use,
:func:`.camera.rotation_6d_to_matrix`) and one translation per frame, camera-to-world.

- Frame 0 is the identity (the world frame is the first camera).
- A new frame starts as a detached copy of the previous frame's pose, or, with a pose prior (the code's
  ``with_preprocessed_poses``: relative poses from `traj.csv`), as the previous pose composed with the prior's
  relative pose ``c2w_k = c2w_{k-1} @ rel_k``.
- Each frame's parameters are their own Parameters, so the trainer can optimise the window's frames only (LocalRF
  gives the newest frames their own optimiser); :meth:`FramePoses.parameters_of` returns them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cvpr24.pipelines.omnilocalrf.camera import as_homogeneous, matrix_to_rotation_6d, rotation_6d_to_matrix


class FramePoses(nn.Module):
    """Per-frame camera-to-world poses (module docstring). ``c2w(ids)`` -> (k, 3, 4)."""

    def __init__(self, n_frames: int = 0):
        super().__init__()
        self.r6 = nn.ParameterList()
        self.t = nn.ParameterList()
        for _ in range(n_frames):
            self.append()

    def __len__(self) -> int:
        return len(self.t)

    @torch.no_grad()
    def append(self, rel_pose: Tensor | None = None) -> int:
        """Add a frame (module docstring); returns its index. ``rel_pose`` (3|4, 4): the prior's motion from the
        previous frame to the new one, in the previous camera's frame."""
        if len(self) == 0:
            r6, t = torch.eye(3, 2), torch.zeros(3)
        else:
            prev = as_homogeneous(self.c2w([len(self) - 1])[0])
            new = prev @ as_homogeneous(rel_pose.to(prev.dtype)) if rel_pose is not None else prev
            r6, t = matrix_to_rotation_6d(new[:3, :3]), new[:3, 3].clone()
        self.r6.append(nn.Parameter(r6))
        self.t.append(nn.Parameter(t))
        return len(self) - 1

    def c2w(self, ids: Sequence[int] | Tensor | None = None) -> Tensor:
        """Camera-to-world (k, 3, 4) of the frames ``ids`` (all when None); differentiable in their parameters."""
        idx = range(len(self)) if ids is None else [int(i) for i in ids]
        if not idx:
            return torch.zeros(0, 3, 4)
        rot = rotation_6d_to_matrix(torch.stack([self.r6[i] for i in idx]))
        t = torch.stack([self.t[i] for i in idx])
        return torch.cat([rot, t[..., None]], dim=-1)

    def parameters_of(self, ids: Sequence[int]) -> list[nn.Parameter]:
        """The rotation and translation Parameters of the frames ``ids`` (for a window's optimiser)."""
        out: list[nn.Parameter] = []
        for i in ids:
            out += [self.r6[int(i)], self.t[int(i)]]
        return out

    def translations(self) -> Tensor:
        """(n, 3) camera centres in world coordinates (detached), for the camera-path figure and RF allocation."""
        return torch.stack([t.detach() for t in self.t]) if len(self) else torch.zeros(0, 3)
