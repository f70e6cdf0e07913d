"""The 640-px shipping recipe: frozen shared backbone, ignore regions, zoom-out crops, teacher every k-th batch,
one fixed schedule and exact mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featherface.checkpoint import load_model, read_checkpoint
from featherface.data.transforms import Sample, TrainTransform, random_square_crop
from featherface.errors import FeatherFaceError
from featherface.geometry.anchors import make_anchors
from featherface.geometry.boxes import box_iou, cxcywh_to_xyxy
from featherface.models import build_model
from featherface.train.distill import informative_anchors, teacher_forward
from featherface.train.freeze import freeze_module, unfreeze_module
from featherface.train.loss import DetectionLoss, mine_negatives
from featherface.train.matching import match_anchors
from featherface.train.precise_bn import recompute_bn_stats
from featherface.train.trainer import Trainer, train

from helpers import save_random_upstream_teacher
from test_trainer import make_tiny_dataset, tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_ship"))


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory):
    return save_random_upstream_teacher(tmp_path_factory.mktemp("teacher_ship"), seed=5)


def _frozen_config(tmp, tiny, teacher, name, **over):
    values = {"distill.teacher": str(teacher), "freeze_backbone": True, "epochs": 2, "data.max_images": 4,
              "model_config.dropblock_prob": 0.0}
    values.update(over)
    return tiny_config(tmp, tiny, name, **values)


def _body_state(model):
    return {k: v.clone() for k, v in model.body.state_dict().items()}


# ------------------------------------------------------------------------------------------------ frozen backbone
def test_freeze_module_survives_train_and_unfreezes():
    model = build_model("featherface_v2")
    freeze_module(model.body)
    model.train()
    assert model.training and not model.body.training
    assert all(not m.training for m in model.body.modules())
    assert not any(p.requires_grad for p in model.body.parameters())
    assert model.bifpn.training
    unfreeze_module(model.body)
    model.train()
    assert model.body.training and all(p.requires_grad for p in model.body.parameters())


def test_frozen_backbone_is_bit_identical_after_training(tmp_path, tiny, random_teacher):
    cfg = _frozen_config(tmp_path, tiny, random_teacher, "frozen")
    t = Trainer(cfg, progress=False)
    before = _body_state(t.model)
    teacher_body = t.teacher.body.state_dict()
    for k, v in before.items():  # one shared backbone: the student's is the teacher's
        assert torch.equal(v, teacher_body[k]), k
    assert not any(p.requires_grad for p in t.model.body.parameters())
    opt_params = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in opt_params for p in t.model.body.parameters())
    neck_before = {k: v.clone() for k, v in t.model.state_dict().items() if not k.startswith("body.")}
    t.fit()
    assert not t.model.body.training or not t.model.training
    after = t.model.body.state_dict()
    for k, v in before.items():  # weights and BN running statistics (buffers) untouched
        assert torch.equal(v, after[k]), k
    changed = [k for k, v in t.model.state_dict().items() if k in neck_before and not torch.equal(v, neck_before[k])]
    assert changed, "the trainable part did not train"
    # the saved model contains the backbone, loads strictly and gives the frozen weights
    saved = load_model(tmp_path / "runs" / "frozen" / "last.pth")
    for k, v in before.items():
        assert torch.equal(saved.body.state_dict()[k], v), k


def test_teacher_through_shared_backbone_equals_its_forward(random_teacher):
    teacher = load_model(random_teacher).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref, ref_feats = teacher.forward_with_features(x)
        feats = teacher.body(x)
    got, got_feats = teacher_forward(teacher, x, backbone_features=feats)
    for name in ("boxes", "logits", "landmarks"):
        assert torch.equal(getattr(ref, name), getattr(got, name)), name
    for a, b in zip(ref_feats, got_feats):
        assert torch.equal(a, b)


def test_backbone_computed_once_per_batch(tmp_path, tiny, random_teacher):
    cfg = _frozen_config(tmp_path, tiny, random_teacher, "once", epochs=1)
    t = Trainer(cfg, progress=False)
    calls = {"student_body": 0, "teacher_body": 0}
    s_body, t_body = t.model.body.forward, t.teacher.body.forward

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    t.model.body.forward = count("student_body", s_body)
    t.teacher.body.forward = count("teacher_body", t_body)
    t.train_epoch(0)
    assert calls == {"student_body": t.steps_per_epoch, "teacher_body": 0}


def test_backbone_last_phase_trains_weights_with_frozen_bn_statistics(tmp_path, tiny, random_teacher):
    """backbone_lr_scale > 0: the backbone's weights train at lr * scale (own optimizer group, same schedule), its
    BatchNorm buffers stay bit-identical and in eval mode, and the teacher runs its own, untouched backbone."""
    cfg = _frozen_config(tmp_path, tiny, random_teacher, "lastphase", backbone_lr_scale=0.1, epochs=1,
                         **{"optim.lr": 1e-2})
    t = Trainer(cfg, progress=False)
    assert len(t.optimizer.param_groups) == 2
    main, body_group = t.optimizer.param_groups
    assert {id(p) for p in body_group["params"]} == {id(p) for p in t.model.body.parameters()}
    assert not {id(p) for p in main["params"]} & {id(p) for p in body_group["params"]}
    assert body_group["lr"] == pytest.approx(0.1 * main["lr"])
    weights = {k: v.clone() for k, v in t.model.body.named_parameters()}
    buffers = {k: v.clone() for k, v in t.model.body.named_buffers()}
    teacher_body = {k: v.clone() for k, v in t.teacher.body.state_dict().items()}
    calls = {"teacher_body": 0}
    t_forward = t.teacher.body.forward

    def counted(*a, **k):
        calls["teacher_body"] += 1
        return t_forward(*a, **k)

    t.teacher.body.forward = counted
    t.train_epoch(0)
    assert calls["teacher_body"] >= 1  # not shared any more: the teacher's features come from its own backbone
    assert all(not m.training for m in t.model.body.modules())
    moved = [k for k, v in t.model.body.named_parameters() if not torch.equal(v, weights[k])]
    assert moved, "the backbone's weights did not train"
    for k, v in t.model.body.named_buffers():  # BN running statistics fixed
        assert torch.equal(v, buffers[k]), k
    for k, v in t.teacher.body.state_dict().items():
        assert torch.equal(v, teacher_body[k]), k
    assert main["lr"] > 0 and body_group["lr"] == pytest.approx(0.1 * main["lr"])  # the ratio survives the schedule


def test_backbone_lr_scale_needs_freeze_backbone(tmp_path, tiny, random_teacher):
    with pytest.raises(FeatherFaceError, match="backbone_lr_scale"):
        _frozen_config(tmp_path, tiny, random_teacher, "bad", freeze_backbone=False, backbone_lr_scale=0.1)


def test_frozen_backbone_needs_a_trained_source(tmp_path, tiny):
    cfg = tiny_config(tmp_path, tiny, "nosource", freeze_backbone=True, epochs=1)
    with pytest.raises(FeatherFaceError, match="freeze_backbone"):
        Trainer(cfg, progress=False)


def test_precise_bn_touches_only_trainable_bns():
    torch.manual_seed(0)
    model = build_model("featherface_v2", dropblock_prob=0.0)
    freeze_module(model.body)
    body = _body_state(model)
    neck_bn = model.bifpn[0]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) and not any(
        m is b for b in model.body.modules())]
    means_before = [bn.running_mean.clone() for bn in bns]
    used = recompute_bn_stats(model, [torch.randn(2, 3, 64, 64) * 50 for _ in range(2)])
    assert used == 2 and neck_bn is not None
    for k, v in model.body.state_dict().items():
        assert torch.equal(v, body[k]), k
    assert any(not torch.equal(bn.running_mean, m) for bn, m in zip(bns, means_before))


def test_teacher_every_k_runs_the_teacher_on_every_kth_batch(tmp_path, tiny, random_teacher):
    cfg = _frozen_config(tmp_path, tiny, random_teacher, "every2", epochs=1, **{"distill.teacher_every": 2,
                                                                                "data.batch_size": 1})
    t = Trainer(cfg, progress=False)
    seen = []
    orig = t.teacher.forward_from_backbone

    def spy(feats):
        seen.append(t.global_step)
        return orig(feats)

    t.teacher.forward_from_backbone = spy
    rec = t.train_epoch(0)
    assert t.steps_per_epoch == 4 and seen == [0, 2]
    assert np.isfinite(rec["loss_total"])


@pytest.mark.parametrize("feature_weight, runs_teacher", [(0.0, False), (0.1, True)])
def test_alpha_zero_skips_the_teacher_only_without_feature_loss(tmp_path, tiny, random_teacher, feature_weight,
                                                                 runs_teacher):
    cfg = _frozen_config(tmp_path, tiny, random_teacher, f"alpha0_fw{feature_weight}", epochs=1,
                         **{"distill.alpha": 0.0, "distill.feature_weight": feature_weight, "data.batch_size": 2})
    t = Trainer(cfg, progress=False)
    calls = []
    orig_fb, orig_fw = t.teacher.forward_from_backbone, t.teacher.forward_with_features
    t.teacher.forward_from_backbone = lambda feats: (calls.append("from_backbone"), orig_fb(feats))[1]
    t.teacher.forward_with_features = lambda x: (calls.append("with_features"), orig_fw(x))[1]
    images, targets = next(iter(t.loader))
    parts = t.train_step(images, targets)
    assert bool(calls) == runs_teacher
    if not runs_teacher:
        # no KD part computed, and the minimised loss is the task loss ...
        assert "kd" not in parts and torch.equal(parts["total"], parts["task"])
        # ... which is what the teacher's outputs would have given at zero weight
        t.model.train()
        with torch.no_grad():
            feats = t.model.body(images)
            t_out = orig_fb(feats)
            with_teacher = t.step_module(images, targets, t.anchors, t_out, feats)
            without = t.step_module(images, targets, t.anchors, None, feats)
        assert torch.allclose(with_teacher["total"], with_teacher["task"])
        assert torch.allclose(with_teacher["total"], without["total"])
    else:
        assert "kd" in parts


# ------------------------------------------------------------------------------------------------ schedule / resume
def test_resume_with_another_length_is_refused(tmp_path, tiny):
    cfg = tiny_config(tmp_path, tiny, "len", epochs=1, **{"data.max_images": 2})
    train(cfg, progress=False)
    longer = tiny_config(tmp_path, tiny, "len", epochs=3, **{"data.max_images": 2})
    with pytest.raises(FeatherFaceError, match="planned for 1 epochs"):
        Trainer(longer, resume=tmp_path / "runs" / "len" / "last.pth", progress=False)


def test_mid_epoch_resume_is_exact(tmp_path, tiny, random_teacher):
    over = {"data.batch_size": 1, "checkpoint_every": 1, "model_config.dropblock_prob": 0.1}
    straight = _frozen_config(tmp_path, tiny, random_teacher, "straight", **over)
    train(straight, progress=False)
    part = _frozen_config(tmp_path, tiny, random_teacher, "part", **over)
    t = Trainer(part, progress=False)
    t.run_dir.mkdir(parents=True, exist_ok=True)
    # run epoch 1 and a part of epoch 2 as the trainer does, writing a mid-epoch checkpoint after each step,
    # then stop ("killed") after 2 of the 4 steps of epoch 2
    t.records.append(t.train_epoch(0))
    t.save(t.run_dir / "last.pth", 1)
    real_save = t.save
    saved = []

    class Stop(Exception):
        pass

    def save_then_stop(path, epochs_done, partial_epoch=None):
        real_save(path, epochs_done, partial_epoch)
        saved.append(partial_epoch["steps_done"] if partial_epoch else None)
        if partial_epoch and partial_epoch["steps_done"] == 2:
            raise Stop

    t.save = save_then_stop
    with pytest.raises(Stop):
        t.train_epoch(1)
    ck = read_checkpoint(t.run_dir / "last.pth")
    assert ck["extra"]["epoch"] == 1 and ck["extra"]["partial_epoch"]["steps_done"] == 2
    del t
    train(part, resume=tmp_path / "runs" / "part" / "last.pth", progress=False)
    a = read_checkpoint(tmp_path / "runs" / "straight" / "last.pth")
    b = read_checkpoint(tmp_path / "runs" / "part" / "last.pth")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["extra"]["global_step"] == b["extra"]["global_step"] == 8
    assert b["extra"]["partial_epoch"] is None
    ra = [r for r in a["extra"]["metrics"] if r["kind"] == "epoch"]
    rb = [r for r in b["extra"]["metrics"] if r["kind"] == "epoch"]
    assert [r["loss_total"] for r in ra] == pytest.approx([r["loss_total"] for r in rb], rel=1e-12)


# ------------------------------------------------------------------------------------------------ ignore regions
def _grid_anchors():
    return make_anchors((64, 64), (8, 16, 32), ((16, 32), (64, 128), (256, 512)))


def test_flagged_face_anchors_are_ignored_not_background():
    anchors = _grid_anchors()
    face = torch.tensor([[0.05, 0.05, 0.45, 0.45]])
    flagged = torch.tensor([[0.55, 0.55, 0.95, 0.95]])
    m = match_anchors(face, anchors, ignore_boxes=flagged)
    iou_f = box_iou(flagged, cxcywh_to_xyxy(anchors))[0]
    # what would have been positive for the flagged face is ignored, nothing of it is positive
    would_be = match_anchors(flagged, anchors).positive
    assert would_be.any() and m.ignore[would_be].all()
    assert not (m.positive & m.ignore).any()
    assert not m.ignore[iou_f == 0].any()
    # the real face is unaffected
    assert torch.equal(m.positive, match_anchors(face, anchors).positive)


def test_too_small_face_ignores_its_best_anchor():
    anchors = _grid_anchors()
    tiny_face = torch.tensor([[0.30, 0.30, 0.33, 0.33]])  # 2 px at 64: best IoU < 0.2, cannot be matched
    iou = box_iou(tiny_face, cxcywh_to_xyxy(anchors))[0]
    assert float(iou.max()) < 0.2
    m = match_anchors(tiny_face, anchors)
    assert not m.positive.any()
    assert m.ignore[int(iou.argmax())]
    assert int(m.ignore.sum()) == int((iou == iou.max()).sum())


def test_ignored_anchors_get_no_loss_and_are_never_mined():
    torch.manual_seed(0)
    anchors = _grid_anchors()
    a = anchors.shape[0]
    target = {"boxes": torch.tensor([[0.05, 0.05, 0.45, 0.45]]),
              "ignore_boxes": torch.tensor([[0.55, 0.55, 0.95, 0.95]])}
    loss = DetectionLoss()
    assign = loss.assign(anchors, [target])
    ign = assign.ignore[0]
    assert ign.any()
    # make the ignored anchors the most confident false positives: an ignore-unaware miner would take them first
    logits = torch.zeros(1, a, 2)
    logits[0, ign, 1] = 20.0
    neg = loss.negatives(logits, assign.positive, assign.ignore)
    assert not (neg & assign.ignore).any()
    assert mine_negatives(torch.rand(1, a), assign.positive, 7, assign.ignore)[assign.ignore].sum() == 0
    # changing the ignored anchors' logits does not change the loss
    boxes, lms = torch.zeros(1, a, 4), torch.zeros(1, a, 10)
    l1 = loss(boxes, logits, lms, anchors, [target])["cls"]
    logits2 = logits.clone()
    logits2[0, ign, 1] = -20.0
    l2 = loss(boxes, logits2, lms, anchors, [target])["cls"]
    assert torch.allclose(l1, l2)
    # KD negatives skip them too
    _, kd_neg, _ = informative_anchors(logits, torch.zeros(1, a, 2), assign.positive, ignore=assign.ignore)
    assert not (kd_neg & assign.ignore).any()


def test_ignore_flags_travel_through_the_transform():
    rng = np.random.default_rng(0)
    img = np.full((200, 300, 3), 128, np.uint8)
    sample = Sample.create(img, boxes=[[20, 20, 80, 80], [150, 60, 170, 80]], ignore=[False, True])
    image, target = TrainTransform(image_size=64, crop_scales=(1.0,), distort=False)(sample, rng)
    assert image.shape == (3, 64, 64)
    assert target["boxes"].shape == (1, 4) and target["ignore_boxes"].shape[1] == 4
    assert target["ignore_boxes"].shape[0] <= 1


def test_zoom_out_crop_pads_and_keeps_faces_inside():
    rng = np.random.default_rng(1)
    img = np.full((100, 200, 3), 50, np.uint8)
    sample = Sample.create(img, boxes=[[90, 40, 110, 60]])
    for _ in range(20):
        out, ok = random_square_crop(sample, rng, scales=(2.0,))
        assert ok
        side = 200  # int(2.0 * min(100, 200))
        assert out.image.shape == (side, side, 3)
        b = out.boxes[0]
        assert 0 <= b[0] < b[2] <= side and 0 <= b[1] < b[3] <= side
        assert b[2] - b[0] == pytest.approx(20) and b[3] - b[1] == pytest.approx(20)
        # the face's pixels moved with it, the padding is the mean colour
        x1, y1 = int(b[0]), int(b[1])
        assert (out.image[y1:y1 + 20, x1:x1 + 20] == 50).all()
        assert (out.image == np.array([104, 117, 123], np.uint8)).all(axis=2).any()
