"""CMS's kNN mean shift and losses: each test fails if the corresponding spec detail is wrong."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cvpr24.pipelines.cms import model as Mo


def _unit(x):
    return F.normalize(torch.as_tensor(x, dtype=torch.float64), dim=-1)


def test_knn_mean_drops_the_top1_and_averages_the_next_k():
    bank = _unit([[1, 0], [0.99, 0.14], [0.96, 0.28], [0.9, 0.44], [0, 1], [-1, 0]])
    q = bank[:1]  # an exact row of the bank: itself must be excluded
    got = Mo.knn_mean(q, bank, k=2)
    torch.testing.assert_close(got, bank[1:3].mean(0, keepdim=True))
    # without dropping, the query itself would be in the mean
    assert not torch.allclose(Mo.knn_mean(q, bank, k=2, drop_top1=False), got)


def test_knn_mean_drops_top1_even_when_the_query_is_not_in_the_bank():
    bank = _unit([[1, 0], [0.9, 0.44], [0, 1], [-1, 0]])
    q = _unit([[0.98, 0.2]])
    torch.testing.assert_close(Mo.knn_mean(q, bank, k=1), bank[1:2])


def test_batched_knn_mean_equals_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(200, 16, generator=g), dim=-1)
    q = F.normalize(torch.randn(37, 16, generator=g), dim=-1)
    ref = []
    for row in q:
        sims = [float(row @ b) for b in bank]
        order = sorted(range(len(bank)), key=lambda j: -sims[j])[1:9]
        ref.append(bank[order].mean(0))
    torch.testing.assert_close(Mo.knn_mean(q, bank, k=8, chunk=7), torch.stack(ref))


def test_point_between_two_tight_clusters_moves_to_the_nearer_mode():
    g = torch.Generator().manual_seed(1)
    a = F.normalize(torch.tensor([1.0, 0.0, 0.0]) + 0.01 * torch.randn(20, 3, generator=g), dim=-1)
    b = F.normalize(torch.tensor([0.0, 1.0, 0.0]) + 0.01 * torch.randn(20, 3, generator=g), dim=-1)
    p = F.normalize(torch.tensor([[0.7, 0.5, 0.0]]), dim=-1)  # between, nearer mode a
    pts = torch.cat([a, b, p])
    moved = Mo.iterate_mean_shift(pts, k=8, alpha=0.5)[-1]
    mode_a, mode_b = F.normalize(a.mean(0), dim=0), F.normalize(b.mean(0), dim=0)
    assert float(moved @ mode_a) > float(p[0] @ mode_a)  # closer to its mode
    assert float(moved @ mode_b) < float(p[0] @ mode_b)
    for _ in range(10):
        pts = Mo.iterate_mean_shift(pts, k=8, alpha=0.5)
    assert float(pts[-1] @ mode_a) > 0.99


def test_mean_shift_limits_norm_and_detached_normalisation_gradient():
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=-1)
    m = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(Mo.mean_shift(v, m, 0.0), v)
    torch.testing.assert_close(Mo.mean_shift(v, m, 1.0), F.normalize(m, dim=-1))
    z = Mo.mean_shift(v, m, 0.3)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    # the norm is a constant in the backward pass: dz/dv = (1 - a) / ||s|| * I
    alpha = 0.3
    vi = v[0].clone().requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda x: Mo.mean_shift(x[None], m[:1], alpha)[0], vi)
    s = ((1 - alpha) * v[0] + alpha * m[0]).norm()
    torch.testing.assert_close(jac, (1 - alpha) / s * torch.eye(4, dtype=torch.float64))


def test_con_meanshift_loss_excludes_the_positive_from_the_denominator():
    z = _unit([[1, 0.2], [0.3, 1], [0.9, 0.1], [0.2, 0.8]])  # [view1 of img 0, 1; view2 of img 0, 1]
    tau = 0.5
    s = z @ z.T / tau
    hand = []
    for a in range(4):
        p = (a + 2) % 4
        negs = [j for j in range(4) if j not in (a, p)]
        hand.append(-s[a, p] + torch.logsumexp(s[a, negs], 0))
    got = Mo.con_meanshift_loss(z, tau)
    torch.testing.assert_close(got, torch.stack(hand).mean())
    assert not torch.allclose(got, Mo.info_nce_loss(z, tau))  # standard InfoNCE keeps the positive
    swapped = torch.cat([z[2:], z[:2]])
    torch.testing.assert_close(Mo.con_meanshift_loss(swapped, tau), got)  # symmetric in the two views


def test_supcon_matches_the_reference_formula_and_uses_its_own_temperature():
    v = _unit([[1, 0.1], [0.8, 0.5], [0.1, 1], [-0.5, 0.9]])
    y = torch.tensor([0, 0, 1, 1])
    t = 0.07
    hand = []
    for a in range(4):
        others = [j for j in range(4) if j != a]
        denom = math.log(sum(math.exp(float(v[a] @ v[j]) / t) for j in others))
        pos = [j for j in others if y[j] == y[a]]
        hand.append(-sum(float(v[a] @ v[p]) / t - denom for p in pos) / len(pos))
    torch.testing.assert_close(Mo.supcon_loss(v, y, 0.07), torch.tensor(sum(hand) / 4, dtype=torch.float64))
    # tau of L_cms does not leak into L_sup
    kw = {"bank": None, "labels": torch.tensor([0, 1]), "labelled": torch.tensor([True, True]), "k": 1,
          "alpha": 0.0, "tau_sup": 0.07, "lam": 0.5}
    _, m1 = Mo.cms_total_loss(v, tau=0.3, **kw)
    _, m2 = Mo.cms_total_loss(v, tau=0.9, **kw)
    assert m1["l_sup"] == m2["l_sup"] and m1["l_cms"] != m2["l_cms"]


def test_loss_weighting_lambda_zero_and_one():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(8, 6, generator=g, dtype=torch.float64, requires_grad=True)
    labels, labelled = torch.tensor([0, 1, 0, 2]), torch.tensor([True, True, False, False])

    def grad(lam):
        raw.grad = None
        loss, _ = Mo.cms_total_loss(F.normalize(raw, dim=-1), None, labels, labelled, k=2, alpha=0.0, tau=0.3,
                                    tau_sup=0.07, lam=lam)
        loss.backward()
        return raw.grad.clone()

    g1 = grad(1.0)  # only L_sup: unlabelled rows (images 2, 3 in both views) get no gradient
    assert torch.all(g1[[2, 3, 6, 7]] == 0) and g1[[0, 1, 4, 5]].abs().sum() > 0
    g0 = grad(0.0)
    raw.grad = None
    Mo.con_meanshift_loss(F.normalize(raw, dim=-1), 0.3).backward()
    torch.testing.assert_close(g0, raw.grad)


def test_only_the_last_block_and_head_train_and_g_stays_fixed():
    net = Mo.build_net(1, [4, 8, 8], {"out_dim": 8, "hidden_dim": 16, "bottleneck_dim": 4})
    x = torch.rand(6, 1, 16, 16)
    net.backbone.set_standardisation(x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = Mo.freeze_all_but_last_block(net)
    opt = torch.optim.SGD(params, lr=0.1)
    loss, _ = Mo.cms_total_loss(net(torch.cat([x[:3], x[3:]])), None, torch.tensor([0, 1, 0]),
                                torch.tensor([True, True, False]), k=1, alpha=0.0, tau=0.3, tau_sup=0.07, lam=0.35)
    loss.backward()
    opt.step()
    after = net.state_dict()
    for k in before:
        frozen = k.startswith("backbone.stages.0") or k.startswith("backbone.stages.1") or "original0" in k \
            or k == "backbone.feat_mean"
        assert torch.equal(before[k], after[k]) == frozen, k
    g = after["head.last_layer.parametrizations.weight.original0"]
    torch.testing.assert_close(g, torch.ones_like(g))


def test_embedding_is_the_normalised_head_output():
    net = Mo.build_net(1, [4, 8, 8], {"out_dim": 12, "hidden_dim": 16, "bottleneck_dim": 4})
    x = torch.rand(5, 1, 16, 16)
    v = net(x)
    assert v.shape == (5, 12)  # the head's output dimension, not the backbone's (8)
    torch.testing.assert_close(v, F.normalize(net.head(net.backbone(x)), dim=-1))
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(5))
