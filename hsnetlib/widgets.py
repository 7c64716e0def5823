"""ipywidgets explorers for the notebooks. All logic lives here (and is unit-tested); the
notebooks only build an explorer and display ``explorer.ui``.

- :class:`CorrelationExplorer`: pick a query pixel (sliders) and a layer (dropdown) and see its
  4D correlation slice C_l(x_q, .) over the support image (Eq. 2), for every layer of a level.
- :class:`EpisodeExplorer`: pick benchmark / fold / episode / shots (or upload your own query,
  support and mask), press "Segment", and see the supports, the prediction of HSNet and of HSNet†
  (no support masking) and their IoU against the ground truth.
"""

from __future__ import annotations

import io

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from .correlation import correlation, mask_features
from .data import make_benchmark
from .data.episodes import image_transform, resize_mask
from .metrics import intersection_union
from .viz import COLORS, overlay, show, show_supports, to_image


def layer_names(model) -> list[str]:
    """Labels of the correlated layers in pyramid order: deepest level first, shallow-to-deep inside a level."""
    names = []
    for p, (level, size) in enumerate(zip(("deep", "middle", "shallow"), model.pyramid_sizes), 1):
        names += [f"level {p} ({level}) · layer {i + 1}/{size}" for i in range(size)]
    return names


class CorrelationExplorer:
    """Slices of the hypercorrelation of one (query, support, mask) episode.

    ``maps[l]`` is the 4D correlation of layer l, (Ha, Wa, Hb, Wb); the explorer shows
    ``maps[l][i, j]`` for the chosen query position, drawn over the support image.
    """

    def __init__(self, model, query_img, support_img, support_mask, x: float = 0.5, y: float = 0.5):
        self.model = model
        self.query, self.support, self.mask = query_img, support_img, support_mask
        with torch.no_grad():
            q_feats = model.features(query_img[None])
            s_feats = mask_features(model.features(support_img[None]), support_mask[None].float())
        order = []  # pyramid order: deepest group first, layers inside a group shallow to deep
        end = len(q_feats)
        for size in model.pyramid_sizes:
            order += list(range(end - size, end))
            end -= size
        self.maps = [correlation(q_feats[i], s_feats[i])[0] for i in order]  # each (Ha, Wa, Hb, Wb)
        self.layer = W.Dropdown(options=list(zip(layer_names(model), range(len(order)))), description="layer")
        self.x = W.FloatSlider(x, min=0, max=0.999, step=0.01, description="query x")
        self.y = W.FloatSlider(y, min=0, max=0.999, step=0.01, description="query y")
        self.out = W.Output()
        for w in (self.layer, self.x, self.y):
            w.observe(lambda _: self.draw(), names="value")
        self.ui = W.VBox([W.HBox([self.layer, self.x, self.y]), self.out])

    def position(self) -> tuple[int, int]:
        """The query cell (row, col) of the selected layer under the sliders."""
        Ha, Wa = self.maps[self.layer.value].shape[:2]
        return int(self.y.value * Ha), int(self.x.value * Wa)

    def current_map(self, layer: int | None = None) -> torch.Tensor:
        """C_l(x_q, .) over the support dims, (Hb, Wb), at the sliders' position, for the selected
        layer (or ``layer``, an index into the dropdown's list, without touching the widgets)."""
        layer = self.layer.value if layer is None else layer
        Ha, Wa = self.maps[layer].shape[:2]
        return self.maps[layer][int(self.y.value * Ha), int(self.x.value * Wa)]

    def draw(self):
        self.out.clear_output(wait=True)
        with self.out:
            fig, (a, b) = plt.subplots(1, 2, figsize=(7, 3.4))
            a.imshow(to_image(self.query))
            a.scatter(
                [self.x.value * self.query.shape[-1]],
                [self.y.value * self.query.shape[-2]],
                c="yellow",
                marker="x",
                s=80,
            )
            a.set(title="query: selected pixel", xlabel="x", ylabel="y")
            b.imshow(overlay(to_image(self.support), self.mask, COLORS["support"], 0.25))
            im = b.imshow(
                self.current_map().numpy(),
                cmap="magma",
                alpha=0.6,
                vmin=0,
                vmax=1,
                extent=(0, self.support.shape[-1], self.support.shape[-2], 0),
            )
            b.set(title=f"correlation over support\n{self.layer.label}", xlabel="x", ylabel="y")
            fig.colorbar(im, ax=b, fraction=0.046)
            plt.show()


def _upload_bytes(upload: W.FileUpload) -> bytes | None:
    files = upload.value
    if not files:
        return None
    first = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
    return bytes(first["content"])


class EpisodeExplorer:
    """Run HSNet (and optionally HSNet†) on a chosen episode or on your own images.

    models: {"HSNet": model, "HSNet†": model_without_support_mask, ...}.
    """

    def __init__(self, models: dict, benchmark="toy", img_size=128, root=None, benchmarks=("toy",)):
        self.models, self.img_size, self.root = models, img_size, root
        self.benchmark = W.Dropdown(options=list(benchmarks), value=benchmark, description="benchmark")
        self.fold = W.IntSlider(0, min=0, max=3, description="fold")
        self.index = W.BoundedIntText(0, min=0, max=999, description="episode")
        self.shot = W.ToggleButtons(options=[1, 5], value=1, description="shots")
        self.run = W.Button(description="Segment", button_style="primary")
        self.query_upload = W.FileUpload(accept="image/*", description="query")
        self.support_upload = W.FileUpload(accept="image/*", description="support")
        self.mask_upload = W.FileUpload(accept="image/*", description="support mask")
        self.use_uploads = W.Button(description="Segment my images")
        self.status = W.HTML()
        self.out = W.Output()
        self.result: dict | None = None
        self.run.on_click(lambda _: self.segment_episode())
        self.use_uploads.on_click(lambda _: self.segment_uploads())
        self.ui = W.VBox(
            [
                W.HBox([self.benchmark, self.fold, self.index, self.shot, self.run]),
                W.HBox([self.query_upload, self.support_upload, self.mask_upload, self.use_uploads]),
                self.status,
                self.out,
            ]
        )

    def dataset(self):
        return make_benchmark(
            self.benchmark.value,
            self.root,
            fold=self.fold.value,
            split="test",
            shot=self.shot.value,
            img_size=self.img_size,
        )

    def predict(self, query, supports, masks, gt=None) -> dict:
        """Run every model; returns {"preds": {name: (H, W)}, "iou": {name: IoU x100 or None}}."""
        preds, ious = {}, {}
        for name, model in self.models.items():
            pred = model.predict(query[None], supports[None], masks[None])[0]
            preds[name] = pred
            if gt is not None:
                inter, union = intersection_union(pred[None], gt[None])
                ious[name] = 100 * float(inter[0, 1]) / max(float(union[0, 1]), 1)
            else:
                ious[name] = None
        return {"preds": preds, "iou": ious}

    def segment_episode(self) -> dict:
        ds = self.dataset()
        i = min(self.index.value, len(ds) - 1)
        item = ds[i]
        self.result = {
            "item": item,
            **self.predict(item["query_img"], item["support_imgs"], item["support_masks"], item["query_mask"]),
        }
        ep = ds.episode(i)
        self.status.value = f"episode {i}: query <code>{ep.query_name}</code>, class {ep.class_id}, " + ", ".join(
            f"{n} IoU {v:.1f}" for n, v in self.result["iou"].items()
        )
        self.draw()
        return self.result

    def segment_uploads(self) -> dict:
        raw = [_upload_bytes(u) for u in (self.query_upload, self.support_upload, self.mask_upload)]
        if any(r is None for r in raw):
            self.status.value = "Upload a query image, a support image and a support mask (white = object) first."
            return {}
        tf = image_transform(self.img_size)
        query = tf(Image.open(io.BytesIO(raw[0])).convert("RGB"))
        support = tf(Image.open(io.BytesIO(raw[1])).convert("RGB"))
        mask = torch.from_numpy(np.array(Image.open(io.BytesIO(raw[2])).convert("L")) >= 128)
        mask = resize_mask(mask, (self.img_size, self.img_size))
        item = {"query_img": query, "support_imgs": support[None], "support_masks": mask[None]}
        self.result = {"item": item, **self.predict(query, support[None], mask[None])}
        self.status.value = "your images: no ground truth, so no IoU"
        self.draw()
        return self.result

    def draw(self):
        item, preds = self.result["item"], self.result["preds"]
        k = item["support_imgs"].shape[0]
        self.out.clear_output(wait=True)
        with self.out:
            fig, axes = plt.subplots(1, k + 1 + len(preds), figsize=(2.3 * (k + 1 + len(preds)), 2.6), squeeze=False)
            show_supports(axes[0], item["support_imgs"], item["support_masks"])
            query = to_image(item["query_img"])
            show(axes[0, k], query, "query + ground truth", item.get("query_mask"), COLORS["gt"])
            for a, (name, pred) in zip(axes[0, k + 1 :], preds.items()):
                iou = self.result["iou"][name]
                show(a, query, name + ("" if iou is None else f" IoU {iou:.0f}"), pred, COLORS["pred"])
            plt.show()
