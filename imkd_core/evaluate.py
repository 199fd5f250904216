"""Detections (base_link) -> nuScenes result JSON (global) -> the devkit's real `DetectionEval`.

The devkit evaluates only its hard-coded split names; `evaluate` runs the same `DetectionEval`
machinery (GT loading with load_gt's filters, add_center_dist, filter_eval_boxes, accumulate,
calc_ap/calc_tp) on an explicit list of sample tokens, so any version folder (mini, trainval,
synthetic) and any scene selection can be scored. Module import needs numpy only; the devkit is
imported inside the functions that need it (the ROS side converts detections without it).
"""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from imkd_core.atomic import atomic_write_json
from imkd_core.frame import CLASSES, Detections

MAX_BOXES_PER_SAMPLE = 500
TP_NAMES: dict[str, str] = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE",
                            "vel_err": "mAVE", "attr_err": "mAAE"}
RESULT_META: dict[str, bool] = {"use_camera": True, "use_lidar": False, "use_radar": True,
                                "use_map": False, "use_external": False}
_VEHICLES = ("car", "truck", "bus", "trailer", "construction_vehicle")
_CYCLES = ("bicycle", "motorcycle")


def default_attribute(name: str, speed: float) -> str:
    """mmdet3d's default attribute for a predicted class at a given speed (m/s)."""
    moving = speed > 0.2
    if name in _VEHICLES:
        return "vehicle.moving" if moving else "vehicle.parked"
    if name in _CYCLES:
        return "cycle.with_rider" if moving else "cycle.without_rider"
    if name == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    return ""


# ----------------------------------------------------------------------------- conversion
def detections_to_results(
    detections_by_token: Mapping[str, Detections],
    ego_to_global_by_token: Mapping[str, np.ndarray],
    attributes_by_token: Mapping[str, Sequence[str]] | None = None,
    max_boxes: int = MAX_BOXES_PER_SAMPLE,
) -> dict[str, Any]:
    """Ego-frame detections -> devkit result dict {'meta', 'results': {token: [box, ...]}}.

    Centre/heading/velocity go to the global frame with `ego_to_global` (4x4 at the frame stamp);
    rotation is the quaternion of the global yaw (boxes upright, as nuScenes annotates them);
    size becomes wlh; the top `max_boxes` by score are kept. Attributes: mmdet3d's per-class
    default from the speed unless `attributes_by_token` gives them (GT-as-predictions).
    """
    results: dict[str, list[dict[str, Any]]] = {}
    for token, det in detections_by_token.items():
        T = np.asarray(ego_to_global_by_token[token], dtype=np.float64)
        order = np.argsort(-det.scores, kind="stable")[:max_boxes]
        b = det.boxes[order].astype(np.float64)
        scores, labels = det.scores[order], det.labels[order]
        attrs = None if attributes_by_token is None else [attributes_by_token[token][i] for i in order]
        if len(b) == 0:
            results[token] = []
            continue
        centre = b[:, 0:3] @ T[:3, :3].T + T[:3, 3]
        # nuScenes boxes stand upright in the global frame: keep only the global yaw of the heading.
        heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), np.zeros(len(b))], 1) @ T[:3, :3].T
        half = 0.5 * np.arctan2(heading[:, 1], heading[:, 0])
        quat = np.stack([np.cos(half), np.zeros(len(b)), np.zeros(len(b)), np.sin(half)], 1)
        vel3 = np.concatenate([b[:, 7:9], np.zeros((len(b), 1))], axis=1) @ T[:3, :3].T
        speed = np.hypot(b[:, 7], b[:, 8])
        boxes = []
        for i in range(len(b)):
            name = CLASSES[int(labels[i])]
            boxes.append({
                "sample_token": token,
                "translation": centre[i].tolist(),
                "size": [float(b[i, 4]), float(b[i, 3]), float(b[i, 5])],
                "rotation": quat[i].tolist(),
                "velocity": vel3[i, :2].tolist(),
                "detection_name": name,
                "detection_score": float(scores[i]),
                "attribute_name": attrs[i] if attrs is not None else default_attribute(name, float(speed[i])),
            })
        results[token] = boxes
    return {"meta": dict(RESULT_META), "results": results}


def gt_as_predictions(source: Any, sample_tokens: Sequence[str], shift_m: float = 0.0,
                      progress: bool = False) -> dict[str, Any]:
    """Result dict that predicts the ground truth itself (score 1.0): the evaluator's sanity mode.

    source: a NuScenesReader (boxes go annotation -> reader's ego frame -> `detections_to_results`,
    so the whole round trip is exercised; attributes from the GT) or a NuScenes object (annotation
    records copied directly in the global frame). Boxes without LiDAR/radar points are left out,
    as the devkit drops such GT (a prediction for them could only be a false positive).
    shift_m: move every prediction this far sideways, to the left of the ego (the horizontal part
    of base_link +y at the sample), by X + 1 um so that a shift equal to a matching threshold never
    matches under the devkit's strict `<`: shows that the metric reacts. Sideways, because rows of
    cones/barriers/parked cars run along the road: a shift along the road by their spacing would
    land predictions on the neighbours.
    """
    if hasattr(source, "ground_truth") and hasattr(source, "index_of"):
        dets, poses, attrs = {}, {}, {}
        from tqdm import tqdm

        for token in tqdm(sample_tokens, desc="gt", unit="sample", disable=not progress):
            i = source.index_of(token)
            gt = source.ground_truth(i)
            keep = (gt.num_lidar_pts + gt.num_radar_pts) > 0
            dets[token] = Detections(gt.boxes[keep], np.ones(int(keep.sum()), np.float32), gt.labels[keep])
            attrs[token] = [a for a, k in zip(gt.attributes, keep) if k]
            poses[token] = source.ego_to_global(i)
        results = detections_to_results(dets, poses, attrs)
    else:
        results = _gt_results_from_nusc(source, sample_tokens)
    if shift_m:
        nusc = getattr(source, "nusc", source)
        for token, boxes in results["results"].items():
            sd = nusc.get("sample_data", nusc.get("sample", token)["data"]["CAM_FRONT"])
            q = nusc.get("ego_pose", sd["ego_pose_token"])["rotation"]
            w, x, y, z = q
            left = np.array([2 * (x * y - w * z), 1 - 2 * (x * x + z * z)])  # R[:2, 1] of the ego pose
            step = (float(shift_m) + 1e-6 * np.sign(shift_m)) * left / np.linalg.norm(left)
            for box in boxes:
                box["translation"][0] += float(step[0])
                box["translation"][1] += float(step[1])
    return results


def _gt_results_from_nusc(nusc: Any, sample_tokens: Iterable[str]) -> dict[str, Any]:
    from nuscenes.eval.detection.utils import category_to_detection_name

    results: dict[str, list[dict[str, Any]]] = {}
    for token in sample_tokens:
        boxes = []
        for ann_token in nusc.get("sample", token)["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue
            vel = np.nan_to_num(nusc.box_velocity(ann_token)[:2], nan=0.0)
            attr = nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else ""
            boxes.append({"sample_token": token, "translation": list(ann["translation"]), "size": list(ann["size"]),
                          "rotation": list(ann["rotation"]), "velocity": vel.tolist(), "detection_name": name,
                          "detection_score": 1.0, "attribute_name": attr})
        results[token] = boxes[:MAX_BOXES_PER_SAMPLE]
    return {"meta": dict(RESULT_META), "results": results}


# ----------------------------------------------------------------------------- evaluation
def _token_eval_class():
    """A DetectionEval whose GT comes from an explicit sample-token list (built lazily: devkit import)."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import (
        add_center_dist,
        filter_eval_boxes,
        load_gt_of_sample_tokens,
        load_prediction_of_sample_tokens,
    )
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.evaluate import DetectionEval

    class TokenDetectionEval(DetectionEval):
        """DetectionEval on explicit sample tokens: same loaders and filters as the split-based one."""

        def __init__(self, nusc, config, result_path: str, sample_tokens: Sequence[str], output_dir: str,
                     verbose: bool = True, ego_band: tuple[float, float] | None = None) -> None:
            self.nusc, self.cfg, self.result_path = nusc, config, result_path
            self.eval_set = "custom"
            self.output_dir, self.verbose = output_dir, verbose
            self.plot_dir = osp.join(output_dir, "plots")
            os.makedirs(output_dir, exist_ok=True)
            tokens = list(dict.fromkeys(sample_tokens))
            self.pred_boxes, self.meta = load_prediction_of_sample_tokens(
                result_path, config.max_boxes_per_sample, DetectionBox, sample_tokens=tokens, verbose=verbose)
            self.gt_boxes = load_gt_of_sample_tokens(nusc, tokens, DetectionBox, verbose=verbose)
            for t in tokens:  # a sample without any box must still be known to both sides
                self.pred_boxes.boxes.setdefault(t, [])
                self.gt_boxes.boxes.setdefault(t, [])
            self.pred_boxes = add_center_dist(nusc, self.pred_boxes)
            self.gt_boxes = add_center_dist(nusc, self.gt_boxes)
            # filter_eval_boxes cannot type an EvalBoxes without any box; nothing to filter then.
            if len(self.pred_boxes.all):
                self.pred_boxes = filter_eval_boxes(nusc, self.pred_boxes, config.class_range, verbose=verbose)
            if len(self.gt_boxes.all):
                self.gt_boxes = filter_eval_boxes(nusc, self.gt_boxes, config.class_range, verbose=verbose)
            if ego_band is not None:  # AP by range: GT and predictions alike inside [lo, hi) m of the ego
                lo, hi = ego_band
                for eb in (self.pred_boxes, self.gt_boxes):
                    for t in list(eb.boxes):
                        eb.boxes[t] = [b for b in eb.boxes[t] if lo <= b.ego_dist < hi]
            self.sample_tokens = self.gt_boxes.sample_tokens
            assert isinstance(self.gt_boxes, EvalBoxes)

    return TokenDetectionEval


def evaluate(
    nusc: Any,
    version: str | None,
    results: Mapping[str, Any],
    sample_tokens: Sequence[str],
    output_dir: str | os.PathLike,
    verbose: bool = True,
    config_name: str = "detection_cvpr_2019",
    render_curves: bool = False,
    ego_band: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Score `results` (devkit format, global frame) on `sample_tokens` with the devkit's DetectionEval.

    nusc: a NuScenes object or a dataroot path (then `version` names the folder). Writes
    results_nusc.json (atomically), metrics_summary.json and metrics_details.json into output_dir.
    Returns {'NDS', 'mAP', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE', 'per_class_AP', 'per_class_tp',
    'classes_with_gt', 'mAP_present', 'NDS_present', 'num_samples'} (the devkit's NDS/mAP average
    over all 10 classes; the *_present ones over the classes with GT in these samples) and prints
    a table when verbose. Also 'AP@0.5' .. 'AP@4.0': the mean over the 10 classes of the AP at
    each centre-distance threshold. ego_band=(lo, hi) keeps only boxes (GT and predictions)
    lo <= ego distance < hi m: AP by range.
    """
    from nuscenes.eval.common.config import config_factory

    if isinstance(nusc, (str, os.PathLike)):
        if version is None:
            raise ValueError("evaluate(dataroot, version, ...): version is required with a dataroot")
        from imkd_core.data.nuscenes import load_nuscenes

        nusc = load_nuscenes(str(nusc), version)
    tokens = list(dict.fromkeys(sample_tokens))
    if not tokens:
        raise ValueError("evaluate: no sample tokens given")
    known = {s["token"] for s in nusc.sample}
    unknown = [t for t in tokens if t not in known]
    if unknown:
        raise ValueError(f"evaluate: {len(unknown)} sample tokens are not in {nusc.version}, e.g. {unknown[:3]}")
    cfg = config_factory(config_name)
    res = dict(results.get("results", {}))
    for t in tokens:  # every evaluated sample must appear in the result file, possibly empty
        res.setdefault(t, [])
    too_many = [t for t in tokens if len(res[t]) > cfg.max_boxes_per_sample]
    if too_many:
        raise ValueError(f"evaluate: more than {cfg.max_boxes_per_sample} boxes for samples {too_many[:3]}")
    out_dir = str(output_dir)
    os.makedirs(out_dir, exist_ok=True)
    result_path = osp.join(out_dir, "results_nusc.json")
    atomic_write_json(result_path, {"meta": dict(results.get("meta", RESULT_META)), "results": res})

    evaluator = _token_eval_class()(nusc, cfg, result_path, tokens, out_dir, verbose=verbose, ego_band=ego_band)
    metrics, md_list = evaluator.evaluate()
    if render_curves:
        evaluator.render(metrics, md_list)
    summary = metrics.serialize()
    summary["meta"] = evaluator.meta.copy()
    atomic_write_json(osp.join(out_dir, "metrics_summary.json"), summary)
    atomic_write_json(osp.join(out_dir, "metrics_details.json"), md_list.serialize())

    out: dict[str, Any] = {"NDS": float(summary["nd_score"]), "mAP": float(summary["mean_ap"])}
    for key, short in TP_NAMES.items():
        out[short] = float(summary["tp_errors"][key])
    out["per_class_AP"] = {k: float(v) for k, v in summary["mean_dist_aps"].items()}
    for th in cfg.dist_ths:
        out[f"AP@{float(th):.1f}"] = float(np.mean([float(v[str(th)] if str(th) in v else v[th])
                                                     for v in summary["label_aps"].values()]))
    out["per_class_tp"] = {k: {TP_NAMES[m]: float(e) for m, e in v.items()}
                           for k, v in summary["label_tp_errors"].items()}
    # The devkit averages over all 10 classes, so a class without GT in the evaluated samples counts
    # as AP 0 (scene-0916 has 6 classes: a perfect detector scores mAP 0.6). Also report the metrics
    # over the classes that have GT, computed the devkit's way (nan-mean TP errors, NDS weights).
    present = sorted({b.detection_name for b in evaluator.gt_boxes.all}, key=list(out["per_class_AP"]).index)
    out["classes_with_gt"] = present
    if present:
        out["mAP_present"] = float(np.mean([out["per_class_AP"][c] for c in present]))
        tp_present = []
        for short in TP_NAMES.values():
            vals = [out["per_class_tp"][c][short] for c in present]
            vals = [v for v in vals if not np.isnan(v)]
            tp_present.append(float(np.mean(vals)) if vals else 1.0)
        out["NDS_present"] = float((5 * out["mAP_present"] + sum(1 - min(1.0, e) for e in tp_present)) / 10)
    else:
        out["mAP_present"] = out["NDS_present"] = 0.0
    out["num_samples"] = len(tokens)
    if verbose:
        print(format_metrics(out))
    return out


def format_metrics(m: Mapping[str, Any]) -> str:
    """A printable table: headline metrics, then AP and TP errors per class (nan = not defined)."""
    lines = ["NDS {:.4f} | mAP {:.4f} | ".format(m["NDS"], m["mAP"])
             + " ".join(f"{k} {m[k]:.4f}" for k in TP_NAMES.values())]
    if "mAP_present" in m:
        lines.append("over the {} classes with GT: NDS {:.4f} | mAP {:.4f}".format(
            len(m["classes_with_gt"]), m["NDS_present"], m["mAP_present"]))
    lines += [f"{'class':<22}{'AP':>7}" + "".join(f"{k[1:]:>7}" for k in TP_NAMES.values())]
    for name, ap in m["per_class_AP"].items():
        tp = m.get("per_class_tp", {}).get(name, {})
        lines.append(f"{name:<22}{ap:7.3f}" + "".join(f"{tp.get(k, float('nan')):7.3f}" for k in TP_NAMES.values()))
    return "\n".join(lines)
