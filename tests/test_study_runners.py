"""scripts/study.py (the machinery of scripts/ablation.py and scripts/sensitivity.py): the budget plan, the arms and
their configurations, the evenly spaced training subset, the noise rule and the table writers, on fake arm results
(no training); plus one tiny end-to-end run of both runners (slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import study  # noqa: E402


# ------------------------------------------------------------------------------------------------ plan
def test_plan_fits_the_hours_with_an_equal_budget():
    p = study.plan_budget(n_arms=10, dataset_images=3416, batch_size=16, image_size=640, hours=6.0,
                          images_per_s=3.2, eval_images=385, eval_s_per_image=1.5, bn_batches=20)
    assert p["max_images"] % 16 == 0 and p["max_images"] <= 3416
    assert p["images_seen"] == p["max_images"] * p["epochs"]
    assert p["steps"] == p["images_seen"] // 16
    assert p["est_study_s"] <= 6 * 3600 and p["est_study_s"] > 0.97 * 6 * 3600  # uses the time, never more
    assert p["est_arm_s"] == pytest.approx(p["est_train_s"] + p["est_bn_s"] + p["est_eval_s"])
    assert p["est_eval_s"] == pytest.approx(385 * 1.5)
    # more images than the dataset holds: more epochs, the subset stays within the dataset
    assert p["epochs"] == 2 and p["images_seen"] > 3416
    assert p["warmup_epochs"] == pytest.approx(0.05 * p["epochs"])


def test_explicit_budget_and_impossible_budget():
    p = study.plan_budget(n_arms=10, dataset_images=3416, batch_size=4, image_size=160, max_images=8, epochs=1,
                          eval_images=5)
    assert (p["explicit"], p["max_images"], p["epochs"], p["steps"], p["hours"]) == (True, 8, 1, 2, None)
    p = study.plan_budget(n_arms=10, dataset_images=3416, batch_size=16, image_size=640, max_images=100, epochs=3)
    assert p["max_images"] == 96 and p["images_seen"] == 288  # whole batches
    with pytest.raises(ValueError, match="no training time"):
        study.plan_budget(n_arms=10, dataset_images=3416, batch_size=16, image_size=640, hours=0.5)


def test_format_plan_states_budget_and_time():
    p = study.plan_budget(n_arms=10, dataset_images=3416, batch_size=16, image_size=640)
    text = study.format_plan(p, study.ABLATION_ARMS, study.ABLATION_ARMS[:2])
    assert f"{p['max_images']} training images" in text and "per arm" in text and "whole study (10 arms)" in text
    assert "to run now: 2 arm(s)" in text and "T4_a0.7_s43" in text


# ------------------------------------------------------------------------------------------------ arms, configs
def test_arms_of_both_studies():
    names = [a.name for a in study.study_arms()]
    assert len(names) == len(set(names)) == 10  # the two baseline seeds are shared
    base = [a for a in study.study_arms() if a.baseline]
    assert sorted(a.seed for a in base) == [42, 43]
    assert all((a.alpha, a.temperature, a.model_config) == (0.7, 4.0, ()) for a in base)
    switches = {a.name: dict(a.model_config) for a in study.ABLATION_ARMS if a.model_config}
    assert switches == {"bifpn_v1_s42": {"neck": "bifpn_v1"}, "ssh_v1_s42": {"ssh": "v1"},
                        "cbam_v1_s42": {"attention": "cbam_v1"}}
    sens = {(a.temperature, a.alpha) for a in study.SENSITIVITY_ARMS if a.distilled}
    assert sens == {(2.0, 0.7), (4.0, 0.7), (6.0, 0.7), (4.0, 0.5), (4.0, 0.9)}
    (nodistill,) = [a for a in study.SENSITIVITY_ARMS if not a.distilled]
    assert nodistill.alpha == 0 and nodistill.feature_weight == 0 and nodistill.seed == 42
    assert study.select_arms(study.ABLATION_ARMS, ["ssh_v1_s42"])[0].name == "ssh_v1_s42"
    with pytest.raises(SystemExit):
        study.select_arms(study.ABLATION_ARMS, ["T2_a0.7_s42"])


def test_arm_configs_share_the_recipe_and_budget(tmp_path):
    from featherface.train.config import config_from_dict, config_to_dict, load_config

    recipe = config_to_dict(load_config(study.RECIPE))
    plan = study.plan_budget(n_arms=10, dataset_images=3416, batch_size=16, image_size=640)
    labels = tmp_path / "subset.txt"
    cfgs = {a.name: study.arm_config_dict(recipe, a, plan, study_dir=tmp_path, train_labels=labels)
            for a in study.study_arms()}
    for name, v in cfgs.items():
        cfg = config_from_dict(v)  # valid trainer configurations
        assert cfg.freeze_backbone and cfg.data.image_size == 640 and cfg.data.batch_size == 16
        assert cfg.data.ignore_invalid and cfg.distill.teacher_every == recipe["distill"]["teacher_every"]
        assert cfg.epochs == plan["epochs"] and cfg.data.max_images is None
        assert cfg.data.train_labels == str(labels) and Path(cfg.distill.teacher).is_absolute()
        assert cfg.eval.every == 0 and cfg.run_dir == tmp_path / name
        assert cfg.schedule.warmup_epochs == plan["warmup_epochs"]

    def differing(a, b):
        out = set()
        for sec in set(a) | set(b):
            if isinstance(a.get(sec), dict):
                out |= {f"{sec}.{k}" for k in set(a[sec]) | set(b[sec]) if a[sec].get(k) != b[sec].get(k)}
            elif a.get(sec) != b.get(sec):
                out.add(sec)
        return out

    base = cfgs["T4_a0.7_s42"]
    assert differing(base, cfgs["T4_a0.7_s43"]) == {"seed", "name"}
    assert differing(base, cfgs["ssh_v1_s42"]) == {"model_config.ssh", "name"}
    assert differing(base, cfgs["T2_a0.7_s42"]) == {"distill.temperature", "name"}
    assert differing(base, cfgs["a0_nodistill_s42"]) == {"distill.alpha", "distill.feature_weight", "name"}
    # the fingerprint ignores run-time settings, not the budget
    fp = study.fingerprint(base)
    assert study.fingerprint({**base, "threads": 1, "name": "x"}) == fp
    assert study.fingerprint({**base, "epochs": base["epochs"] + 1}) != fp
    # a trainer setting added later keeps earlier arms' fingerprints at its default, and counts otherwise
    assert study.fingerprint({**base, "backbone_lr_scale": 0.0}) == study.fingerprint(
        {k: v for k, v in base.items() if k != "backbone_lr_scale"})
    assert study.fingerprint({**base, "backbone_lr_scale": 0.1}) != fp


def test_subset_labels_are_evenly_spaced_and_fixed(tmp_path):
    src = tmp_path / "label.txt"
    src.write_text("".join(f"# ev/img_{i}.jpg\n{i} 1 2 3\n" for i in range(10)))
    out = study.write_subset_labels(src, 4, tmp_path / "sub.txt")
    heads = [ln for ln in out.read_text().splitlines() if ln.startswith("#")]
    assert heads == ["# ev/img_0.jpg", "# ev/img_2.jpg", "# ev/img_5.jpg", "# ev/img_7.jpg"]
    assert "5 1 2 3" in out.read_text()
    study.write_subset_labels(src, 4, tmp_path / "sub.txt")  # same content: fine
    assert study.count_label_images(src) == 10
    src.write_text("".join(f"# ev/other_{i}.jpg\n" for i in range(10)))
    with pytest.raises(SystemExit, match="changed"):
        study.write_subset_labels(src, 4, tmp_path / "sub.txt")


# ------------------------------------------------------------------------------------------------ tables
def _fake(arm, easy, medium, hard, recall=0.6):
    return {"name": arm.name, "label": arm.label, "seed": arm.seed, "baseline": arm.baseline, "params": 256156,
            "ap_easy": easy, "ap_medium": medium, "ap_hard": hard, "train_images_per_s": 3.1, "wall_s": 2000.0,
            "hard_size_recall": {"bins": ["<16", "16-32", ">=32"], "num_faces": [10, 5, 0],
                                 "recall_any": [0.5, 0.8, None], "recall_at_0.5": [0.1, 0.4, None],
                                 "total_any": recall, "total_at_0.5": 0.2}}


def test_noise_rule():
    b42, b43 = study.BASE_S42, study.BASE_S43
    assert study.noise_level([]) is None
    one = study.noise_level([_fake(b42, 0.50, 0.40, 0.20)])
    assert one["hard"] is None and one["mean_hard"] == pytest.approx(0.20)
    assert study.delta_cell(0.25, "hard", one) == "+5.00 (noise unknown)"
    n = study.noise_level([_fake(b42, 0.50, 0.40, 0.20), _fake(b43, 0.52, 0.40, 0.18)])
    assert n["easy"] == pytest.approx(0.02) and n["medium"] == 0 and n["hard"] == pytest.approx(0.02)
    assert n["mean_easy"] == pytest.approx(0.51) and n["mean_hard"] == pytest.approx(0.19)
    assert study.delta_cell(0.525, "easy", n) == "+1.50 (within noise)"
    assert study.delta_cell(0.53, "easy", n) == "+2.00 (within noise)"  # equal to the noise: within
    assert study.delta_cell(0.15, "hard", n) == "-4.00"
    assert study.delta_cell(0.41, "medium", n) == "+1.00"  # zero noise: any difference is outside
    assert n["recall"] == 0 and n["mean_recall"] == pytest.approx(0.6)  # the Hard recall has its own noise


def test_recall_noise_separates_what_ap_noise_hides():
    b42, b43 = study.BASE_S42, study.BASE_S43
    n = study.noise_level([_fake(b42, 0.46, 0.33, 0.12, recall=0.629), _fake(b43, 0.23, 0.14, 0.05, recall=0.619)])
    assert n["recall"] == pytest.approx(0.010) and n["mean_recall"] == pytest.approx(0.624)
    arm = _fake(study.ABLATION_ARMS[2], 0.40, 0.30, 0.10, recall=0.58)
    assert study.delta_cell(study.metric_value(arm, "hard"), "hard", n).endswith("(within noise)")
    assert study.delta_cell(study.metric_value(arm, "recall"), "recall", n) == "-4.40"


def test_write_table_markdown_json_png(tmp_path):
    arms = list(study.ABLATION_ARMS)
    results = {a.name: r for a, r in [(arms[0], _fake(arms[0], 0.50, 0.40, 0.20)),
                                      (arms[1], _fake(arms[1], 0.52, 0.41, 0.18, recall=0.62)),
                                      (arms[3], _fake(arms[3], 0.30, 0.35, 0.19, recall=0.70))]}
    plan = study.plan_budget(n_arms=10, dataset_images=3416, batch_size=16, image_size=640)
    cmd = "OMP_WAIT_POLICY=PASSIVE python scripts/ablation.py --hours 6"
    paths = study.write_table(tmp_path, "ablation", "Ablation, measured", arms, results, plan, cmd,
                              [("Switch", lambda a: a.switch)])
    md = paths["md"].read_text()
    assert cmd in md and f"{plan['max_images']} training images" in md
    ssh = next(ln for ln in md.splitlines() if ln.startswith("| V2 + V1 SSH"))
    assert "30.00" in ssh and "-21.00" in ssh and "-5.50 |" in ssh and "+0.00 (within noise)" in ssh and 'ssh="v1"' in ssh
    assert "| 70.00 | +9.00 |" in ssh  # Hard recall 70 % against the seeds' mean 61 %, noise 2 points
    assert "| V2 + V1 BiFPN | neck=\"bifpn_v1\" | 42 | not yet measured |" in md
    assert "Seed noise (|seed 42 − seed 43|" in md and "Hard 2.00; Hard recall 2.00" in md
    assert "| *faces* | 10 | 5 | 0 | 15 |" in md and "50.0 / 10.0" in md
    data = json.loads(paths["json"].read_text())
    assert data["command"] == cmd and data["plan"]["epochs"] == plan["epochs"]
    assert [a["name"] for a in data["arms"]] == [a.name for a in arms]
    assert data["arms"][2]["result"] is None and data["arms"][3]["result"]["ap_easy"] == 0.30
    assert data["noise"]["hard"] == pytest.approx(0.02) and data["noise"]["recall"] == pytest.approx(0.02)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_write_table_without_results(tmp_path):
    plan = study.plan_budget(n_arms=10, dataset_images=3416, batch_size=16, image_size=640)
    paths = study.write_table(tmp_path, "t", "T", study.SENSITIVITY_ARMS, {}, plan, "cmd")
    assert "png" not in paths and "not yet measured" in paths["md"].read_text()
    assert "Seed noise: not measured yet" in paths["md"].read_text()


# ------------------------------------------------------------------------------------------------ end to end
_NEEDS = [REPO / ".cache" / "wider_extra" / "label.txt", REPO.parent / "shared" / "peers" / "featherface"
          / "featherface_train_mobilenet0.25_Final.pth", REPO.parent / "shared" / "data" / "widerface" / "val"]


@pytest.mark.slow
@pytest.mark.skipif(not all(p.exists() for p in _NEEDS), reason="needs .cache/wider_extra, the teacher and val-dev")
def test_tiny_study_end_to_end_resumes_and_skips(tmp_path, capsys):
    import importlib

    sens = importlib.import_module("sensitivity")
    abl = importlib.import_module("ablation")
    tiny = ["--max-images", "4", "--epochs", "1", "--image-size", "96", "--batch-size", "2", "--bn-batches", "1",
            "--eval-max-images", "2", "--threads", "1", "--workers", "0", "--study-dir", str(tmp_path)]
    assert abl.main(tiny + ["--arms", "T4_a0.7_s42"]) == 0
    base = tmp_path / "T4_a0.7_s42"
    r = json.loads((base / "result.json").read_text())
    assert r["images_seen"] == 4 and r["eval_images"] == 2 and r["params"] > r["trained_params"] > 0
    assert (base / "final_precise_bn.pth").exists() and (base / "valdev" / "results.json").exists()
    mtime = (base / "result.json").stat().st_mtime
    assert sens.main(tiny + ["--arms", "T4_a0.7_s42", "a0_nodistill_s42"]) == 0
    out = capsys.readouterr().out
    assert "[T4_a0.7_s42] finished" in out and "skipped" in out  # shared with the ablation: not trained again
    assert (base / "result.json").stat().st_mtime == mtime
    nod = json.loads((tmp_path / "a0_nodistill_s42" / "result.json").read_text())
    assert nod["distilled"] is False and nod["feature_weight"] == 0
    for stem in ("ablation", "sensitivity_temperature", "sensitivity_alpha"):
        assert (tmp_path / f"{stem}.md").exists() and (tmp_path / f"{stem}.png").exists()
    # another budget in the same study folder is refused for a started arm
    with pytest.raises(SystemExit, match="another configuration"):
        abl.main([*tiny[:1], "6", *tiny[2:], "--arms", "T4_a0.7_s42"])
