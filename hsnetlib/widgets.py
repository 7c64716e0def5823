"""ipywidgets explorers for the notebooks. All logic lives here (and is unit-tested); the
notebooks only build an explorer and display ``explorer.ui``.

- :class:`CorrelationExplorer`: pick a query pixel (sliders) and a layer (dropdown) and see its
  4D correlation slice C_l(x_q, .) over the support image (Eq. 2), for every layer of a level.
- :class:`EpisodeExplorer`: pick benchmark / fold / episode / shots (or upload your own query,
  support and mask), press "Segment", and see the supports and the predictions of the given models
  (HSNet, a trained HSNet†, ...) with their IoU against the ground truth.
"""

from __future__ import annotations

import html
import io

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from .correlation import correlation, mask_features
from .data import make_benchmark
from .metrics import episode_iou
from .user_images import display_query, load_user_episode
from .viz import COLORS, draw_mask, interior_point, mask_legend, overlay, show, show_supports, to_image


def layer_names(model) -> list[str]:
    """Labels of the correlated layers, shallow to deep (the backbone's order), with their pyramid
    level in the paper's numbering: level p = 1 is the finest (H/8), p = 3 the deepest (H/32)."""
    names = []
    for p, size in enumerate(reversed(model.pyramid_sizes), 1):  # pyramid_sizes lists the deepest level first
        names += [f"level {p} (H/{4 * 2**p}) · layer {i + 1}/{size}" for i in range(size)]
    return names


class CorrelationExplorer:
    """Slices of the hypercorrelation of one (query, support, mask) episode.

    ``maps[l]`` is the 4D correlation of layer l (shallow to deep), (Ha, Wa, Hb, Wb); the explorer
    shows ``maps[l][i, j]`` for the chosen query position, drawn over the support image.
    The default query position is a pixel inside the query's object when ``query_mask`` is given.
    """

    def __init__(self, model, query_img, support_img, support_mask, x=None, y=None, query_mask=None):
        self.model = model
        self.query, self.support, self.mask = query_img, support_img, support_mask
        if x is None or y is None:
            x, y = interior_point(query_mask) if query_mask is not None else (0.5, 0.5)
        with torch.no_grad():
            q_feats = model.features(query_img[None])
            s_feats = mask_features(model.features(support_img[None]), support_mask[None].float())
        self.maps = [correlation(q, s)[0] for q, s in zip(q_feats, s_feats)]  # each (Ha, Wa, Hb, Wb)
        names = layer_names(model)
        self.layer = W.Dropdown(
            options=list(zip(names, range(len(names)))), description="layer", layout=W.Layout(width="300px")
        )
        slider = dict(min=0, max=0.999, step=0.01, layout=W.Layout(width="260px"))
        self.x = W.FloatSlider(x, description="query x", **slider)
        self.y = W.FloatSlider(y, description="query y", **slider)
        self.figure = W.Image(format="png", layout=W.Layout(max_width="100%"))  # the figure, as PNG bytes
        for w in (self.layer, self.x, self.y):
            w.observe(lambda _: self.draw(), names="value")
        self.ui = W.VBox([W.HBox([self.layer, self.x, self.y], layout=W.Layout(flex_flow="row wrap")), self.figure])

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
        b.imshow(overlay(to_image(self.support), self.mask, COLORS["support"]))
        draw_mask(b, self.mask, COLORS["support"])
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
        self.figure.value = png_bytes(fig)


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (then closed): what the explorers' Image widgets show.

    An Image widget, not an Output widget: it updates the same way in JupyterLab and when a notebook
    is executed headless (nbclient can stall on Output widgets written to during execution)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _upload_bytes(upload: W.FileUpload) -> bytes | None:
    files = upload.value
    if not files:
        return None
    first = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
    return bytes(first["content"])


def _width(px: int) -> W.Layout:
    return W.Layout(width=f"{px}px")


class EpisodeExplorer:
    """Run HSNet (and optionally other models, e.g. a trained HSNet†) on a chosen episode or on your own images.

    models: {"HSNet": model, "HSNet†": model_trained_without_support_masking, ...}.
    unseen_fold: the fold the models were *not* trained on; the fold slider is then fixed to it (any
    other fold's test classes would be training classes of these models). None: every fold offered,
    for models trained per fold.
    Errors (a corrupt upload, a benchmark without its data) are shown in the status line.
    """

    def __init__(
        self,
        models: dict,
        benchmark="toy",
        img_size=128,
        root=None,
        benchmarks=("toy",),
        unseen_fold: int | None = None,
    ):
        self.models, self.img_size, self.root = models, img_size, root
        label = {"description_width": "initial"}
        self.benchmark = W.Dropdown(
            options=list(benchmarks), value=benchmark, description="benchmark", style=label, layout=_width(190)
        )
        lo, hi = (0, 3) if unseen_fold is None else (unseen_fold, unseen_fold)
        self.fold = W.IntSlider(
            lo, min=lo, max=hi, description="fold", disabled=lo == hi, style=label, layout=_width(200)
        )
        if lo == hi:
            self.fold.tooltip = f"the models never saw fold {lo}'s classes; other folds would be seen ones"
        self.index = W.BoundedIntText(0, min=0, max=999, description="episode", style=label, layout=_width(150))
        self.shot = W.ToggleButtons(
            options=[1, 5], value=1, description="shots", style={**label, "button_width": "40px"}, layout=_width(170)
        )
        self.run = W.Button(description="Segment", button_style="primary", layout=_width(110))
        self.query_upload = W.FileUpload(accept="image/*", description="query", layout=_width(150))
        self.support_upload = W.FileUpload(accept="image/*", description="support", layout=_width(150))
        self.mask_upload = W.FileUpload(accept="image/*", description="support mask", layout=_width(170))
        self.use_uploads = W.Button(description="Segment my images", layout=_width(170))
        self.status = W.HTML()
        self.figure = W.Image(format="png", layout=W.Layout(max_width="100%"))  # the figure, as PNG bytes
        self.result: dict | None = None
        self.run.on_click(lambda _: self._report_errors(self.segment_episode))
        self.use_uploads.on_click(lambda _: self._report_errors(self.segment_uploads))
        row = W.Layout(flex_flow="row wrap", align_items="center")
        self.ui = W.VBox(
            [
                W.HBox([self.benchmark, self.fold, self.index, self.shot, self.run], layout=row),
                W.HBox([self.query_upload, self.support_upload, self.mask_upload, self.use_uploads], layout=row),
                self.status,
                self.figure,
            ]
        )

    def _report_errors(self, action) -> None:
        """Run a button's action; a problem with the input is shown in the status line, not lost in a log."""
        try:
            action()
        except (ValueError, OSError) as err:  # DatasetError, UserImageError, missing files
            self.status.value = f"<b style='color:#b00'>error:</b> {html.escape(str(err))}"

    def dataset(self):
        return make_benchmark(
            self.benchmark.value,
            self.root,
            fold=self.fold.value,
            split="test",
            shot=self.shot.value,
            img_size=self.img_size,
        )

    def predict(self, query, supports, masks, gt=None, size=None) -> dict:
        """Run every model; returns {"preds": {name: (H, W)}, "iou": {name: IoU x100 or None}}."""
        preds, ious = {}, {}
        for name, model in self.models.items():
            pred = model.predict(query[None], supports[None], masks[None], size=size)[0]
            preds[name] = pred
            ious[name] = None if gt is None else episode_iou(pred, gt)
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
        episode = load_user_episode(raw[0], [raw[1]], [raw[2]], self.img_size)
        query = display_query(episode)  # the query's aspect, at most DISPLAY_SIDE pixels long
        item = {**episode.as_item(), "query_img": query}
        self.result = {
            "item": item,
            **self.predict(episode.query_img, episode.support_imgs, episode.support_masks, size=query.shape[-2:]),
        }
        h, w = episode.query_size
        self.status.value = f"your images (query {w}x{h}): no ground truth, so no IoU"
        self.draw()
        return self.result

    def draw(self):
        item, preds = self.result["item"], self.result["preds"]
        k = item["support_imgs"].shape[0]
        gt = item.get("query_mask")
        n = k + 1 + len(preds)
        fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.9), squeeze=False)
        show_supports(axes[0], item["support_imgs"], item["support_masks"])
        query = to_image(item["query_img"])
        show(axes[0, k], query, "query" if gt is None else "query + ground truth", gt, COLORS["gt"])
        for a, (name, pred) in zip(axes[0, k + 1 :], preds.items()):
            iou = self.result["iou"][name]
            show(a, query, name + ("" if iou is None else f" IoU {iou:.0f}"), pred, COLORS["pred"])
        names = ("support mask", "prediction") if gt is None else ("support mask", "ground truth", "prediction")
        mask_legend(fig, names)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        self.figure.value = png_bytes(fig)
