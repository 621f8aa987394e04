"""Unit tests of MagNet's model components (spec 9.2, the items about the model); each can fail if its component
is wrong. Tiny widths and 32-64 px images keep the file fast on one CPU core."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from cvpr24.pipelines.magnet import model as M

VOCAB = 30


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_cfg(**kw) -> M.MagNetConfig:
    base = dict(vocab_size=VOCAB, max_tokens=8, image_size=32, dims=(8, 16, 32, 64), text_dim=16, text_heads=2,
                text_ffn=32, mask_dim=16, dec_heads=2, dec_ffn=32, pixel_dec_heads=2, pixel_dec_ffn=32, mtp_dim=16,
                mtp_heads=2, mtp_ffn=32, mg_pool=4, cam_sizes=((1, 2, 3, 6), (1, 2, 3, 6), (1, 2), (1, 2)))
    base.update(kw)
    return M.MagNetConfig(**base)


def sentences(b: int, n: int, seed: int = 0, min_len: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] w ... w [SEP] [PAD]...; lengths (incl. CLS/SEP) uniform in [min_len, n]."""
    g = gen(seed)
    lengths = torch.randint(min_len, n + 1, (b,), generator=g)
    attn = (torch.arange(n)[None] < lengths[:, None]).long()
    ids = torch.randint(5, VOCAB, (b, n), generator=g)
    ids[:, 0] = M.CLS_ID
    ids[torch.arange(b), lengths - 1] = M.SEP_ID
    return ids * attn, attn


def make_batch(b: int = 4, size: int = 32, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = gen(seed + 100)
    ids, attn = sentences(b, n, seed)
    masks = torch.zeros(b, size, size)
    for i in range(b):
        y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
        masks[i, y:y + size // 3, x:x + size // 3] = 1.0
    return {"images": torch.randn(b, 3, size, size, generator=g), "ids": ids, "attn": attn, "masks": masks}


def open_gates(model: torch.nn.Module, std: float = 0.5) -> None:
    """Give every gate a non-zero W2 (and W1), so the gated updates are non-zero."""
    torch.manual_seed(123)
    for m in model.modules():
        if isinstance(m, M.Gate):
            torch.nn.init.normal_(m.w1.weight, std=std)
            torch.nn.init.normal_(m.w2.weight, std=std)


# ------------------------------------------------------------------------------------------- config


def test_config_defaults_are_the_tiny_model_and_bad_values_name_the_field():
    cfg = M.MagNetConfig(vocab_size=45, dims=[24, 48, 96, 192], cam_sizes=[[1, 2], [1], [1], [1]])
    assert cfg.dims == (24, 48, 96, 192) and cfg.cam_sizes == ((1, 2), (1,), (1,), (1,))   # lists -> tuples
    assert (cfg.max_tokens, cfg.image_size, cfg.mask_dim, cfg.dec_layers, cfg.mg_pool) == (12, 64, 64, 2, 8)
    assert not (cfg.mg or cfg.cal or cfg.cam or cfg.use_class_score) and cfg.lang_fusion
    for field, value in (("pixel_decoder", "conv"), ("lang_fusion_mask_mode", "both"), ("dims", (8, 16, 32)),
                         ("image_size", 48), ("text_heads", 5), ("mg_mask_prob", 1.5), ("mg_noise_prob", 0.2),
                         ("cal_tau", 0.0), ("mask_id", 0), ("mg_pool", 99), ("mg_text_pass", "both")):
        with pytest.raises(ValueError, match=field):
            M.MagNetConfig(vocab_size=45, **{field: value})


# ------------------------------------------------------------------------------------------- token masking


def test_mask_tokens_statistics_over_10k_sentences():
    ids, attn = sentences(10_000, 12, seed=1)
    special = torch.isin(ids, torch.tensor([0, 1, 2, 3, 4]))
    eligible = (attn > 0) & ~special
    masked, targets = M.mask_tokens(ids, attn, generator=gen(), force_one=False)
    selected = targets != M.IGNORE_INDEX
    assert not bool((selected & ~eligible).any())                      # specials / padding never selected
    rate = float(selected.sum()) / float(eligible.sum())
    assert abs(rate - 0.15) < 0.01
    assert torch.equal(targets[selected], ids[selected])                # targets = original ids, only there
    to_mask = float((masked[selected] == M.MASK_ID).float().mean())
    assert abs(to_mask - 0.9) < 0.02
    assert torch.equal(masked[selected & (masked != M.MASK_ID)], ids[selected & (masked != M.MASK_ID)])
    assert torch.equal(masked[~selected], ids[~selected])               # nothing else touched
    again, t2 = M.mask_tokens(ids, attn, generator=gen(), force_one=False)
    assert torch.equal(again, masked) and torch.equal(t2, targets)     # deterministic per generator
    assert not torch.equal(M.mask_tokens(ids, attn, generator=gen(1), force_one=False)[1], targets)


def test_mask_tokens_noise_and_force_one():
    ids, attn = sentences(5_000, 12, seed=2)
    masked, targets = M.mask_tokens(ids, attn, generator=gen(), noise_prob=0.1, vocab_size=VOCAB, force_one=True)
    selected = targets != M.IGNORE_INDEX
    assert bool(selected.any(1).all())                                  # every sentence has >= 1 target
    sel = masked[selected]
    p_mask = float((sel == M.MASK_ID).float().mean())
    changed = (sel != M.MASK_ID) & (sel != ids[selected])
    assert abs(p_mask - 0.9) < 0.02 and 0.05 < float(changed.float().mean()) < 0.11   # ~10% random (some = same)
    assert not bool(torch.isin(sel[sel != M.MASK_ID], torch.tensor([0, 1, 2, 4])).any())  # random words non-special
    cfg = tiny_cfg(mg_mask_prob=0.5, mg_mask_replace=1.0)
    m2, t2 = M.mask_tokens(ids, attn, generator=gen(), cfg=cfg)        # cfg values override the defaults
    assert bool((m2[t2 != M.IGNORE_INDEX] == M.MASK_ID).all())
    assert float((t2 != M.IGNORE_INDEX).sum()) > 2 * float(selected.sum())


# ------------------------------------------------------------------------------------------- PWAM / gates


@pytest.mark.parametrize("heads", [1, 2])
def test_pwam_ignores_padding_words_but_not_valid_ones(heads):
    torch.manual_seed(0)
    pwam = M.PWAM(8, 16, heads)
    x, words = torch.randn(2, 12, 8), torch.randn(2, 5, 16)
    attn = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    out = pwam(x, words, attn)
    l2 = words.clone()
    l2[0, 3:] += 5 * torch.randn(2, 16)
    l2[1, 4] -= 3.0
    assert torch.equal(pwam(x, l2, attn), out)                         # padding: exactly zero attention weight
    l3 = words.clone()
    l3[0, 1] += 1.0
    assert (pwam(x, l3, attn)[0] - out[0]).abs().max() > 1e-3          # a valid word matters


def test_pwam_attention_scale_is_full_width_with_heads():
    torch.manual_seed(0)
    pwam = M.PWAM(8, 6, heads=2)
    x, words, attn = torch.randn(1, 4, 8), torch.randn(1, 3, 6), torch.ones(1, 3)
    q = pwam.q_norm(pwam.f_query(x))
    k, v = pwam.f_key(words), pwam.f_value(words)
    outs = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        a = (q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(8)).softmax(-1)   # key_channels = 8, not 4
        outs.append(a @ v[..., s])
    expected = pwam.out_norm(pwam.out(torch.cat(outs, -1)))
    assert torch.allclose(pwam.attention(x, words, attn), expected, atol=1e-6)


def test_gates_start_exactly_closed_and_fusion_leaves_both_streams_untouched():
    g = M.Gate(8)
    mm = torch.randn(3, 5, 8)
    assert torch.equal(g(mm), torch.zeros_like(mm))
    assert g(mm).abs().sum() == 0 and M.Gate(8, init="normal")(mm).abs().sum() > 0
    torch.manual_seed(0)
    enc = M.FusionEncoder(tiny_cfg(cam=True))
    b = make_batch(2)
    ys, lang, xs = enc(b["images"], b["ids"], b["attn"], return_visual=True)
    for x_fused, x_plain in zip(xs, enc.image(b["images"]), strict=True):
        assert torch.equal(x_fused, x_plain)                           # x unchanged by fusion at init
    assert torch.equal(lang, enc.text(b["ids"], b["attn"]))             # and so is the language stream
    assert [tuple(y.shape) for y in ys] == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 32, 2, 2), (2, 64, 1, 1)]
    open_gates(enc)
    xs_open = enc(b["images"], b["ids"], b["attn"], return_visual=True)[2]
    assert not torch.equal(xs_open[0], enc.image(b["images"])[0])


def test_language_fusion_sees_the_image_only_through_an_open_gate():
    torch.manual_seed(0)
    enc = M.FusionEncoder(tiny_cfg())
    b = make_batch(2)
    other = torch.randn_like(b["images"])
    lang_a = enc(b["images"], b["ids"], b["attn"])[1]
    assert torch.equal(lang_a, enc(other, b["ids"], b["attn"])[1])     # gate closed: image cannot reach words
    for gate in enc.lang_gates:
        torch.nn.init.normal_(gate.w2.weight, std=0.5)
    lang_a = enc(b["images"], b["ids"], b["attn"])[1]
    assert (lang_a - enc(other, b["ids"], b["attn"])[1]).abs().max() > 1e-4
    # the language-side PWAM reads the visual tokens BEFORE the vision-side gated update
    open_gates(enc)
    seen = {}
    enc.lang_pwams[0].register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    enc(b["images"], b["ids"], b["attn"])
    before = enc.image.stage(0, b["images"]).flatten(2).transpose(1, 2)
    assert torch.equal(seen["x"], before)
    no_lang = M.FusionEncoder(tiny_cfg(lang_fusion=False))
    assert not hasattr(no_lang, "lang_pwams")


def test_language_pwam_mask_modes():
    torch.manual_seed(0)
    x, words = torch.randn(2, 16, 8), torch.randn(2, 5, 12)
    attn = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    lp = M.LanguagePWAM(12, 8, "intended")
    r = lp(x, words, attn)
    assert torch.equal(r[0, 3:], torch.zeros(2, 12))                   # padding rows: no update
    l2 = words.clone()
    l2[0, 3:] += 4.0
    assert torch.allclose(lp(x, l2, attn), r, atol=1e-6)                 # padding words change nothing
    # released: BERT's additive mask zeroes every VALID query -> uniform attention over pixels, so with no
    # padding the attention output no longer depends on the query projection
    rel = M.LanguagePWAM(12, 8, "released")
    rel.load_state_dict(lp.state_dict())
    full = torch.ones(2, 5)
    a1 = rel.attention(x, words, full)
    torch.nn.init.normal_(rel.f_query.weight)
    assert torch.allclose(rel.attention(x, words, full), a1, atol=1e-6)
    b1 = lp.attention(x, words, full)
    torch.nn.init.normal_(lp.f_query.weight)
    assert (lp.attention(x, words, full) - b1).abs().max() > 1e-3


def test_gate_init_w2_zero_is_trainable_but_both_zero_is_dead():
    for init, alive in (("w2_zero", True), ("both_zero", False)):
        g = M.Gate(6, "relu", init)
        mm = torch.randn(4, 6)
        g(mm).pow(2).sum().backward()          # the update is 0, but W2's gradient need not be
        y = torch.randn(4, 6)
        g.zero_grad()
        (g(mm) * y).sum().backward()
        assert (g.w2.weight.grad.abs().sum() > 0) == alive


# ------------------------------------------------------------------------------------------- CAM


def test_cam_shapes_and_global_branch():
    torch.manual_seed(0)
    cam = M.CAM(16, 12, (1, 2, 3, 6))
    x, words, attn = torch.randn(2, 16, 4, 4), torch.randn(2, 5, 12), torch.tensor([[1, 1, 1, 0, 0]] * 2)
    mm = torch.randn(2, 16, 16)
    y = cam(x, words, attn, mm)
    assert y.shape == (2, 16, 4, 4)
    branches = cam.branches(x, words, attn)
    assert [tuple(o.shape) for o in branches] == [(2, 4, 1, 1), (2, 4, 2, 2), (2, 4, 3, 3), (2, 4, 4, 4)]  # 6 -> 4
    up = F.interpolate(branches[0], size=(4, 4), mode="bilinear", align_corners=True)
    assert torch.equal(up, up[:, :, :1, :1].expand_as(up))             # p = 1: spatially constant
    perm = torch.randperm(16)
    xp = x.flatten(2)[:, :, perm].reshape_as(x)                        # shuffling pixels keeps the global pool
    assert torch.allclose(cam.branches(xp, words, attn)[0], branches[0], atol=1e-5)
    assert not torch.allclose(cam.branches(xp, words, attn)[1], branches[1], atol=1e-3)
    l2 = words.clone()
    l2[:, 1] += 1.0
    assert (cam(x, l2, attn, mm) - y).abs().max() > 1e-4                # the branches read the language


# ------------------------------------------------------------------------------------------- MG head


def test_mtp_is_equivariant_to_joint_permutation_of_visual_and_mask_tokens():
    torch.manual_seed(0)
    cfg = tiny_cfg(mg=True, mg_mask_pe=False, mtp_layers=2)
    head = M.MGHead(cfg)
    for p in head.mtp.parameters():            # BERT's 0.02 init makes every token dependence tiny: widen it
        torch.nn.init.normal_(p, std=1.0)
    text, attn = torch.randn(2, 6, 16), torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    vis = torch.randn(2, 16, 16)
    mask_tok = head.mask_encoder.encode_values(torch.rand(2, 16))
    logits = head.lm_head(head.mtp(text, attn, vis, mask_tok))
    perm = torch.randperm(16)
    joint = head.lm_head(head.mtp(text, attn, vis[:, perm], mask_tok[:, perm]))
    assert torch.allclose(joint, logits, atol=1e-5)
    # without positional encodings V and M are two unordered sets: permuting one alone changes nothing ...
    only_vis = head.lm_head(head.mtp(text, attn, vis[:, perm], mask_tok))
    assert torch.allclose(only_vis, logits, atol=1e-5)
    # ... with the shared grid encoding (as MGHead adds it), moving V against M changes the prediction
    pos = M.sine_position_encoding(4, 4, 16).flatten(1).t()[None]
    mask_pos = mask_tok + pos
    paired = head.mtp(text, attn, vis, mask_pos, pos)
    assert (head.mtp(text, attn, vis[:, perm], mask_pos, pos) - paired).abs().max() > 1e-3
    assert (head.mtp(text, attn, vis, mask_tok[:, perm] + pos, pos) - paired).abs().max() > 1e-3
    # padding text positions are hidden as keys
    text2 = text.clone()
    text2[0, 4:] += 3.0
    assert torch.allclose(head.lm_head(head.mtp(text2, attn, vis, mask_tok))[0, :4], logits[0, :4], atol=1e-5)
    # the full mask encoder adds a positional encoding unless disabled
    gt = (torch.rand(2, 32, 32) > 0.5).float()
    pe_on = M.MaskEncoder(16, 4, use_pe=True)
    pe_off = M.MaskEncoder(16, 4, use_pe=False)
    pe_off.load_state_dict(pe_on.state_dict())
    diff = pe_on(gt) - pe_off(gt)
    assert torch.allclose(diff[0], M.sine_position_encoding(4, 4, 16).flatten(1).t(), atol=1e-6)


def test_mg_loss_is_ce_over_selected_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.full((2, 5), M.IGNORE_INDEX)
    targets[0, 1], targets[0, 3], targets[1, 2] = 4, 6, 0
    manual = -(F.log_softmax(logits[0, 1], -1)[4] + F.log_softmax(logits[0, 3], -1)[6]
               + F.log_softmax(logits[1, 2], -1)[0]) / 3
    assert torch.allclose(M.mg_loss(logits, targets), manual, atol=1e-6)
    other = logits.clone()
    other[0, 0] += 10 * torch.randn(7)
    other[1, 4] -= 5.0
    assert torch.equal(M.mg_loss(other, targets), M.mg_loss(logits, targets))
    assert float(M.mg_loss(logits, torch.full((2, 5), M.IGNORE_INDEX))) == 0.0


def test_model_mg_loss_equals_the_mtp_on_the_same_masking():
    torch.manual_seed(0)
    model = M.MagNet(tiny_cfg(mg=True))
    b = make_batch(3)
    losses = model.losses(b, gen(5))
    masked, targets = M.mask_tokens(b["ids"], b["attn"], generator=gen(5), cfg=model.cfg)
    logits = model.mg_logits(b["images"], masked, b["attn"], b["masks"])     # the masked pass run on its own
    assert torch.allclose(losses["mg"], M.mg_loss(logits, targets), atol=1e-5)
    out = model(b["images"], b["ids"], b["attn"])                      # the main pass run on its own
    seg = M.segmentation_loss(out["pred_logits"], out["pred_masks"], M.downsample_mask(b["masks"], (8, 8)))
    assert torch.allclose(losses["seg"], seg, atol=1e-5)
    assert logits.shape == (3, 8, VOCAB)
    zero = model.mg_logits(b["images"], masked, b["attn"], b["masks"], mask_mode="zero")
    other_img = model.mg_logits(torch.randn_like(b["images"]), masked, b["attn"], torch.zeros_like(b["masks"]),
                                mask_mode="zero", lang=model.encode(b["images"], masked, b["attn"])[2])
    assert torch.allclose(zero, other_img, atol=1e-5)                   # "zero": no visual / mask information
    assert model.mg_head.lm_head.decoder.weight is model.encoder.text.word_emb.weight   # tied (dims match)
    # "text" pass: T_m from the language encoder alone, V from the masked fused pass (differs from "fused"
    # once the language gates are open)
    open_gates(model, std=0.1)
    logits = model.mg_logits(b["images"], masked, b["attn"], b["masks"])
    model.cfg = dataclasses.replace(model.cfg, mg_text_pass="text")
    text_only = model.mg_logits(b["images"], masked, b["attn"], b["masks"])
    manual = model.mg_head(model.lang_proj(model.encoder.text(masked, b["attn"])), b["attn"],
                           F.adaptive_avg_pool2d(model.encode(b["images"], masked, b["attn"])[0], 4).flatten(2)
                           .transpose(1, 2), b["masks"])
    assert torch.allclose(text_only, manual, atol=1e-6) and not torch.allclose(text_only, logits, atol=1e-4)


# ------------------------------------------------------------------------------------------- CAL


def test_cal_near_zero_when_aligned_and_large_when_swapped():
    t = F.normalize(torch.randn(2, 8), dim=-1)
    gt = torch.zeros(2, 4, 4)
    gt[:, :2] = 1.0
    fg = gt[:, None].bool()
    aligned = torch.where(fg, t[:, :, None, None], -t[:, :, None, None])
    swapped = torch.where(fg, -t[:, :, None, None], t[:, :, None, None])
    low = M.cal_loss(aligned, t, gt, tau=0.07, generator=gen())
    high = M.cal_loss(swapped, t, gt, tau=0.07, generator=gen())
    assert float(low) < 1e-6
    # P2T: each fg pixel scores -1/tau against bg pixels at +1/tau -> 2/tau + log|N|; P2P's prototype is
    # built from the fg pixels themselves, so it only measures compactness and stays ~0 here
    assert float(high) > 2 / 0.07
    empty = M.cal_loss(aligned, t, torch.zeros(2, 4, 4), generator=gen())   # no fg anywhere: no image enters the loss
    assert float(empty) == 0.0
    one = M.cal_loss(swapped[:1], t[:1], gt[:1], generator=gen())
    assert torch.allclose(M.cal_loss(swapped, t, torch.stack([gt[0], torch.ones(4, 4)]), generator=gen()), one)


def test_cal_subsamples_with_the_generator():
    torch.manual_seed(0)
    pix = F.normalize(torch.randn(1, 8, 16, 16), dim=1)
    t = F.normalize(torch.randn(1, 8), dim=-1)
    gt = (torch.rand(1, 16, 16) > 0.5).float()
    a = M.cal_loss(pix, t, gt, max_samples=20, generator=gen(1))
    assert torch.equal(a, M.cal_loss(pix, t, gt, max_samples=20, generator=gen(1)))
    assert not torch.equal(a, M.cal_loss(pix, t, gt, max_samples=20, generator=gen(2)))
    full = M.cal_loss(pix, t, gt, max_samples=10_000, generator=gen(1))
    assert torch.equal(full, M.cal_loss(pix, t, gt, max_samples=10_000, generator=gen(9)))   # no sampling needed


# ------------------------------------------------------------------------------------------- inference


def test_inference_formula_bilinear_align_corners_and_class_score():
    masks = torch.tensor([[[[0.0, 2.0], [-2.0, 4.0]]]])                 # (B=1, Q=1, 2, 2)
    cls = torch.tensor([[[0.3, 1.2]]])
    prob = M.mask_probability(cls, masks, (3, 3))
    assert prob.shape == (1, 3, 3)
    corners = prob[0, [0, 0, 2, 2], [0, 2, 0, 2]]
    assert torch.allclose(corners, torch.sigmoid(torch.tensor([0.0, 2.0, -2.0, 4.0])))   # align_corners=True
    assert torch.allclose(prob[0, 1, 1], torch.sigmoid(torch.tensor(1.0)))   # centre = mean of the 4 logits
    with_cls = M.mask_probability(cls, masks, (3, 3), use_class_score=True)
    assert torch.allclose(with_cls, prob * torch.softmax(cls, -1)[0, 0, 1])
    torch.manual_seed(0)
    for use_cls in (False, True):
        model = M.MagNet(tiny_cfg(use_class_score=use_cls))
        b = make_batch(2)
        out = model(b["images"], b["ids"], b["attn"])
        assert len(out["pred_logits"]) == len(out["pred_masks"]) == model.cfg.dec_layers + 1
        assert out["pred_masks"][-1].shape == (2, 1, 8, 8) and out["pred_logits"][-1].shape == (2, 1, 2)
        p = model.predict(b["images"], b["ids"], b["attn"])
        assert p.shape == (2, 32, 32) and not p.requires_grad
        assert torch.allclose(p, M.mask_probability(out["pred_logits"][-1], out["pred_masks"][-1], (32, 32),
                                                    use_cls), atol=1e-6)
        assert model.predict(b["images"], b["ids"], b["attn"], size=(20, 24)).shape == (2, 20, 24)


def test_mg_is_training_only():
    cfg = tiny_cfg(cam=True)
    torch.manual_seed(7)
    plain = M.MagNet(cfg)
    torch.manual_seed(7)
    with_mg = M.MagNet(dataclasses.replace(cfg, mg=True))
    assert plain.mg_head is None and plain.lang_proj is None
    assert plain.inference_parameters() == with_mg.inference_parameters() == M.count_parameters(plain)
    assert M.count_parameters(with_mg) > with_mg.inference_parameters()
    sd_plain, sd_mg = plain.inference_state_dict(), with_mg.inference_state_dict()
    assert sd_plain.keys() == sd_mg.keys() == plain.state_dict().keys()
    assert all(torch.equal(sd_plain[k], sd_mg[k]) for k in sd_plain)   # same seed -> same inference weights
    # train the MG model a step, copy its inference state into a model built without MG
    opt = torch.optim.SGD(with_mg.parameters(), lr=0.1)
    with_mg.losses(make_batch(2), gen())["total"].backward()
    opt.step()
    rebuilt = M.MagNet(cfg)
    rebuilt.load_state_dict({k: v for k, v in with_mg.state_dict().items() if k in rebuilt.state_dict()}, strict=True)

    def boom(*_):
        raise AssertionError("predict must not call the MG head")

    with_mg.mg_head.register_forward_pre_hook(boom)
    with_mg.lang_proj.register_forward_pre_hook(boom)
    b = make_batch(3, seed=4)
    assert torch.equal(with_mg.predict(b["images"], b["ids"], b["attn"]),
                       rebuilt.predict(b["images"], b["ids"], b["attn"]))


# ------------------------------------------------------------------------------------------- msdeform


def _naive_ms_deform(value, shapes, loc, weights):
    """Loop reference: bilinear sampling with zeros outside, align_corners=False (pixel centres at i + 0.5)."""
    b, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = loc.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(b, lq, m, d, dtype=torch.float64)
    for bi in range(b):
        for q in range(lq):
            for mi in range(m):
                for lv, (h, w) in enumerate(shapes):
                    v = value[bi, starts[lv]:starts[lv + 1], mi].double().view(h, w, d)
                    for p in range(n_points):
                        x = float(loc[bi, q, mi, lv, p, 0]) * w - 0.5
                        y = float(loc[bi, q, mi, lv, p, 1]) * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(d, dtype=torch.float64)
                        for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    acc += wy * wx * v[yy, xx]
                        out[bi, q, mi] += float(weights[bi, q, mi, lv, p]) * acc
    return out.view(b, lq, m * d).float()


def test_ms_deform_attn_core_matches_a_naive_loop():
    torch.manual_seed(0)
    shapes = [(4, 5), (2, 3), (1, 1)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(2, s, 2, 3)
    loc = torch.rand(2, 4, 2, 3, 2, 2) * 1.4 - 0.2                      # some points fall outside
    weights = torch.rand(2, 4, 2, 3, 2).flatten(-2).softmax(-1).view(2, 4, 2, 3, 2)
    got = M.ms_deform_attn_core(value, shapes, loc, weights)
    assert got.shape == (2, 4, 6)
    assert torch.allclose(got, _naive_ms_deform(value, shapes, loc, weights), atol=1e-5)


def test_msdeform_pixel_decoder_shapes():
    torch.manual_seed(0)
    model = M.MagNet(tiny_cfg(pixel_decoder="msdeform", pixel_dec_layers=1))
    b = make_batch(2)
    out = model(b["images"], b["ids"], b["attn"])
    assert out["mask_features"].shape == (2, 16, 8, 8)
    ms = model.pixel_decoder(model.encoder(b["images"], b["ids"], b["attn"])[0])[1]
    assert [tuple(z.shape[-2:]) for z in ms] == [(1, 1), (2, 2), (4, 4)]   # 1/32, 1/16, 1/8


# ------------------------------------------------------------------------------------------- training


def test_training_steps_are_finite_decrease_the_loss_and_reach_both_fusion_directions():
    torch.manual_seed(0)
    model = M.MagNet(tiny_cfg(mg=True, cam=True, cal=True, image_size=64, mg_pool=8))
    b = make_batch(4, size=64)
    closed = model.losses(b, gen())
    closed["total"].backward()
    for s in range(4):                                                  # closed gates can still open
        assert model.encoder.lang_gates[s].w2.weight.grad.abs().sum() > 0
        if s < 3:
            assert model.encoder.gates[s].w2.weight.grad.abs().sum() > 0
    assert model.encoder.gates[3].w2.weight.grad is None   # as released: the last stage's updated x is unused
    model.zero_grad()
    open_gates(model, std=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for step in range(4):
        losses = model.losses(b, gen(step))
        assert set(losses) == {"total", "seg", "mg", "cal"}
        assert all(bool(torch.isfinite(v)) for v in losses.values())
        assert float(losses["mg"].detach()) > 0 and float(losses["cal"].detach()) > 0
        opt.zero_grad()
        losses["total"].backward()
        if step == 0:
            for s in range(4):
                for mod in (model.encoder.pwams[s], model.encoder.lang_pwams[s], model.encoder.cams[s]):
                    assert sum(float(p.grad.abs().sum()) for p in mod.parameters()) > 0
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        history.append(float(model.losses(b, gen(step))["seg"].detach()))
    assert history[-1] < float(closed["seg"].detach())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_losses_are_deterministic_and_respect_switches():
    b = make_batch(2)
    torch.manual_seed(0)
    base = M.MagNet(tiny_cfg())
    out = base.losses(b, gen())
    assert float(out["mg"]) == 0.0 and float(out["cal"]) == 0.0 and torch.equal(out["total"], out["seg"])
    torch.manual_seed(0)
    other = M.MagNet(tiny_cfg())
    assert torch.equal(other.losses(b, gen())["total"], out["total"])
    with pytest.raises(RuntimeError):
        base.sentence_features(torch.randn(2, 8, 16), b["attn"])
    for extra in ({"mg_text_pass": "text"}, {"mg_visual": "main"}, {"lang_fusion_mask_mode": "released"}):
        torch.manual_seed(0)
        m = M.MagNet(tiny_cfg(mg=True, **extra))
        r = m.losses(b, gen())
        assert torch.allclose(r["total"], r["seg"] + r["mg"]) and float(r["mg"].detach()) > 0
    torch.manual_seed(0)
    cal = M.MagNet(tiny_cfg(cal=True, lambda_cal=0.5))
    r = cal.losses(b, gen())
    assert torch.allclose(r["total"], r["seg"] + 0.5 * r["cal"])
    t = cal.sentence_features(cal(b["images"], b["ids"], b["attn"])["lang"], b["attn"])
    assert t.shape == (2, 16) and torch.allclose(t.norm(dim=-1), torch.ones(2))
    f = cal.pixel_features(torch.randn(2, 16, 8, 8))
    assert torch.allclose(f.norm(dim=1), torch.ones(2, 8, 8))
