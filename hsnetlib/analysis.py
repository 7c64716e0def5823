"""Measurements of what the correlations alone can tell (notebooks 1 and 6; the toy backbone's bars).

- :func:`separation`: for each correlated layer, how well the best support-masked correlation of a
  query pixel (Eq. 1-2, no learning) separates the target's pixels from every other query pixel:
  the AUROC of that score, per episode, averaged over episodes. 0.5 is chance; a level whose support
  mask vanished gives all-zero correlations, i.e. exactly 0.5.
- :func:`kept_support_fraction`: how often the support mask survives Eq. (1)'s resize on each
  pyramid level's grid (a small object can fall between the sample points of a coarse grid).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from .correlation import correlation, kept_support_positions, mask_features


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The area under the ROC curve of ``scores`` for binary ``labels`` (any shape): the probability that a
    random positive scores above a random negative, ties counted as one half (Mann-Whitney U). NaN
    when one class is absent."""
    scores, labels = scores.flatten().double(), labels.flatten().bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort()
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # ties: every member of a run of equal scores gets the run's mean rank
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


@torch.no_grad()
def best_matches(query_feats, support_feats, support_mask) -> list[torch.Tensor]:
    """Per layer: max over support positions of the masked correlation (Eq. 1-2), (B, Ha, Wa) each."""
    masked = mask_features(support_feats, support_mask.to(support_feats[0].dtype))
    return [correlation(q, s).flatten(-2).max(dim=-1).values for q, s in zip(query_feats, masked)]


@torch.no_grad()
def separation(features, dataset, layer_names, episodes: int = 200, batch_size: int = 8, others=None) -> pd.DataFrame:
    """Per layer, the AUROC of the best support match for target vs other query pixels (module docstring).

    features: (B, 3, H, W) -> the correlated features, shallow to deep (e.g. ``model.features``);
    dataset: 1-shot episodes (the first ``episodes`` of it); layer_names: one label per feature;
    others: optional, episode index -> (H, W) bool mask of the query's *other* objects (the toy's
    :meth:`~hsnetlib.data.toy.ToyDataset.other_objects`): adds ``auroc_vs_objects``, target vs those
    pixels only (episodes whose query has no other object are left out of it).
    Returns columns layer, auroc (mean over episodes), std, episodes[, auroc_vs_objects, object_episodes].
    """
    episodes = min(episodes, len(dataset))
    per_layer: list[list[float]] = [[] for _ in layer_names]
    vs_objects: list[list[float]] = [[] for _ in layer_names]
    for start in range(0, episodes, batch_size):
        index = range(start, min(start + batch_size, episodes))
        batch = torch.utils.data.default_collate([dataset[i] for i in index])
        query, gt = batch["query_img"], batch["query_mask"] > 0  # gt: (B, H, W)
        maps = best_matches(features(query), features(batch["support_imgs"][:, 0]), batch["support_masks"][:, 0])
        distractors = [others(i) for i in index] if others else []
        for layer, m in enumerate(maps):
            up = F.interpolate(m[:, None].float(), gt.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
            per_layer[layer] += [auroc(up[b], gt[b]) for b in range(len(gt))]
            for b, d in enumerate(distractors):
                if d.any():
                    pixels = gt[b] | d
                    vs_objects[layer].append(auroc(up[b][pixels], gt[b][pixels]))
    rows = []
    for name, values, objects in zip(layer_names, per_layer, vs_objects):
        v = _finite(values)
        row = {"layer": name, "auroc": v.mean().item(), "std": v.std().item(), "episodes": len(v)}
        if others:
            o = _finite(objects)
            row |= {"auroc_vs_objects": o.mean().item(), "object_episodes": len(o)}
        rows.append(row)
    return pd.DataFrame(rows)


def _finite(values: list[float]) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float64)
    return v[~v.isnan()]


def kept_support_fraction(dataset, grids: dict[int, tuple[int, int]], episodes: int = 200) -> pd.DataFrame:
    """For each pyramid level p (``grids``: p -> its feature grid), the share of the first ``episodes``
    support masks of which Eq. (1) keeps at least one position on that grid."""
    episodes = min(episodes, len(dataset))
    kept = {p: 0 for p in grids}
    for i in range(episodes):
        mask = dataset[i]["support_masks"][:1]  # (1, H, W)
        for p, grid in grids.items():
            kept[p] += int(kept_support_positions(mask, grid).any())
    return pd.DataFrame([{"level": p, "grid": f"{h}x{w}", "kept": kept[p] / episodes} for p, (h, w) in grids.items()])
