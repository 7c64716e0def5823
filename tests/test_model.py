import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from hsnetlib import FastHSNet, HSNet
from hsnetlib.backbone import extract_features
from hsnetlib.errors import HSNetError, WeightsError
from hsnetlib.model import vote_kshot

SPEC = json.loads((Path(__file__).parent / "data" / "learner_spec.json").read_text())
BACKBONES = ["resnet50", "resnet101", "vgg16"]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: HSNet(name) for name in BACKBONES}


def expected_state_shapes(backbone: str) -> dict:
    """Key -> shape of a released checkpoint, built from the spec file and torchvision's architecture."""
    c4, c3, c2 = SPEC["hypercorr_channels"][backbone]
    sources = {"c4": c4, "c3": c3, "c2": c2}
    shapes = {}
    for block, b in SPEC["conv4d_blocks"].items():
        inch = sources.get(b["in"], b["in"])
        for i, (out, k) in enumerate(zip(b["out"], b["kernel"])):
            for conv in ("conv1", "conv2"):
                shapes[f"hpn_learner.{block}.{3 * i}.{conv}.weight"] = (out, inch, k, k)
                shapes[f"hpn_learner.{block}.{3 * i}.{conv}.bias"] = (out,)
            shapes[f"hpn_learner.{block}.{3 * i + 1}.weight"] = (out,)  # GroupNorm
            shapes[f"hpn_learner.{block}.{3 * i + 1}.bias"] = (out,)
            inch = out
    for name, (out, inch) in SPEC["conv2d"].items():
        shapes[f"hpn_learner.{name}.weight"] = (out, inch, 3, 3)
        shapes[f"hpn_learner.{name}.bias"] = (out,)
    for k, v in getattr(tvm, backbone)(weights=None).state_dict().items():
        shapes[f"backbone.{k}"] = tuple(v.shape)
    return shapes


@pytest.mark.parametrize("backbone, count", [("vgg16", 2_570_018), ("resnet50", 2_573_794), ("resnet101", 2_587_394)])
def test_learnable_parameter_count(models, backbone, count):
    assert models[backbone].num_learnable_parameters() == count


@pytest.mark.parametrize("backbone", BACKBONES)
def test_state_dict_matches_release_layout(models, backbone):
    got = {k: tuple(v.shape) for k, v in models[backbone].state_dict().items()}
    assert got == expected_state_shapes(backbone)
    assert len(got) == SPEC["total_keys"][backbone]


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_resnet_features_are_pre_relu_bottleneck_outputs(models, backbone):
    net, img = models[backbone].backbone, torch.randn(1, 3, 64, 64)
    feats = extract_features(backbone, net, img)
    assert len(feats) == sum(models[backbone].pyramid_sizes)
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(img))))
        l2 = net.layer2(net.layer1(x))
        l4 = net.layer4(net.layer3(l2))
    assert torch.equal(feats[3].relu(), l2)  # last block of layer2: torchvision's own ops, the same bits
    assert torch.equal(feats[-1].relu(), l4)
    assert (feats[-1] < 0).any()  # taken before the ReLU


def test_vgg_features(models):
    net, img = models["vgg16"].backbone, torch.randn(1, 3, 64, 64)
    feats = extract_features("vgg16", net, img)
    with torch.no_grad():
        assert torch.equal(feats[0], net.features[:18](img))  # conv4_1, pre-ReLU (the same ops, the same bits)
        assert torch.equal(feats[5], net.features[:29](img))  # conv5_3, pre-ReLU
        assert torch.equal(feats[6], net.features[:31](img))  # pool5
    assert (feats[0] < 0).any()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_shape_finite_and_odd_sizes(models, backbone):
    model = models[backbone]
    q, s = torch.randn(1, 3, 97, 83), torch.randn(1, 3, 97, 83)
    m = (torch.rand(1, 97, 83) > 0.5).float()
    logits = model(q, s, m)
    assert logits.shape == (1, 2, 97, 83) and torch.isfinite(logits).all()


def test_empty_support_mask_gives_finite_logits(models):
    logits = models["resnet50"](torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64), torch.zeros(2, 64, 64))
    assert torch.isfinite(logits).all()


def test_gradients_reach_every_learner_parameter_and_no_backbone_parameter(models):
    model = models["resnet50"].train()
    model.zero_grad()
    # a full support mask: a random one can zero every support feature of the 2x2 deepest level
    logits = model(torch.randn(2, 3, 96, 96), torch.randn(2, 3, 96, 96), torch.ones(2, 96, 96))
    torch.nn.functional.cross_entropy(logits, (torch.rand(2, 96, 96) > 0.5).long()).backward()
    for name, p in model.hpn_learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    model.eval()


def test_train_mode_keeps_backbone_batchnorm_frozen(models):
    model = models["resnet50"]
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert model.hpn_learner.training and not model.backbone.training
    model(torch.randn(2, 3, 64, 64) * 5 + 3, torch.randn(2, 3, 64, 64), torch.ones(2, 64, 64))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.eval()


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_official_checkpoint_round_trip(models, backbone, tmp_path):
    model = models[backbone]
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "best_model.pt")
    loaded = HSNet.load(tmp_path / "best_model.pt")  # backbone inferred from keys
    assert loaded.backbone_name == backbone
    q, s, m = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64)
    assert torch.equal(loaded(q, s, m), model(q, s, m))
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ours.pt")  # hsnetlib's own format
    assert torch.equal(HSNet.load(tmp_path / "ours.pt")(q, s, m), model(q, s, m))


def test_checkpoint_of_another_backbone_is_explained(models, tmp_path):
    torch.save(models["resnet50"].state_dict(), tmp_path / "r50.pt")
    with pytest.raises(ValueError, match="(?s)missing keys.*looks like a resnet50 model"):
        HSNet.load(tmp_path / "r50.pt", backbone="resnet101")
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        HSNet.load(tmp_path / "nothere.pt")


def test_backbone_weights_from_local_file(tmp_path):
    net = tvm.resnet50(weights=None)
    torch.save(net.state_dict(), tmp_path / "r50.pth")
    model = HSNet("resnet50", weights=tmp_path / "r50.pth")
    assert torch.equal(model.backbone.conv1.weight, net.conv1.weight)
    with pytest.raises(FileNotFoundError, match="torchvision state dict"):
        HSNet("resnet50", weights=tmp_path / "missing.pth")


def test_imagenet_weights_offline_gives_clear_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="could not download ImageNet weights for resnet50.*weights=None"):
        HSNet("resnet50", weights="imagenet")


def test_unknown_backbone_and_kernel():
    with pytest.raises(HSNetError, match="backbone must be one of .*got 'resnet18'"):
        HSNet("resnet18")
    with pytest.raises(HSNetError, match="kernel must be one of .*got 'spiral'"):
        HSNet("resnet50", kernel="spiral")


def test_kshot_vote_hand_worked_example():
    votes = torch.tensor(
        [
            [[[1, 0], [0, 0]], [[1, 1], [0, 0]], [[1, 0], [0, 0]]],  # sum 3 1 / 0 0 -> max 3 -> 1 0 / 0 0
            [[[0, 0], [0, 0]]] * 3,  # no votes: divide by 1, not 0
            [[[1, 1], [0, 0]], [[1, 0], [1, 0]], [[0, 0], [0, 0]]],  # sum 2 1 / 1 0 -> 1 .5 / .5 0
        ]
    )
    expected = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 1], [1, 0]]])
    assert torch.equal(vote_kshot(votes), expected)


@pytest.mark.parametrize("shot", [1, 3])
def test_kshot_logits_run_the_network_once_per_shot(models, shot):
    model = models["resnet50"]
    q, s = torch.randn(2, 3, 64, 64), torch.randn(2, shot, 3, 64, 64)
    m = torch.zeros(2, shot, 64, 64)
    m[..., 8:40, 16:56] = 1
    logits = model.kshot_logits(q, s, m)
    assert logits.shape == (2, shot, 2, 64, 64)
    for k in range(shot):  # the same computation, shot by shot: the same bits
        assert torch.equal(logits[:, k], model(q, s[:, k], m[:, k]))
    pred = model.predict(q, s, m)
    assert pred.shape == (2, 64, 64) and pred.dtype == torch.long
    votes = (logits[:, :, 1] > logits[:, :, 0]).long()
    assert torch.equal(pred, votes[:, 0] if shot == 1 else vote_kshot(votes))
    assert model.predict(q, s, m, size=(50, 70)).shape == (2, 50, 70)


def test_predict_rejects_bad_shapes(models):
    model = models["resnet50"]
    q = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"support_imgs must have shape \(1, K, 3, H, W\)"):
        model.predict(q, torch.randn(1, 3, 64, 64), torch.ones(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"support_masks must have shape \(1, 2, 64, 64\)"):
        model.predict(q, torch.randn(1, 2, 3, 64, 64), torch.ones(1, 64, 64))
    with pytest.raises(ValueError, match=r"query_img must have shape \(B, 3, H, W\)"):
        model.predict(torch.randn(3, 64, 64), torch.randn(1, 1, 3, 64, 64), torch.ones(1, 1, 64, 64))


@pytest.mark.parametrize(("feature_layers", "levels", "ids"), [("last", 3, [3, 9, 12]), ("all", 1, [10, 11, 12])])
def test_ablated_models_correlate_the_chosen_layers(feature_layers, levels, ids):
    full = HSNet("resnet50")
    ablated = HSNet("resnet50", feature_layers=feature_layers, pyramid_levels=levels)
    ablated.backbone.load_state_dict(full.backbone.state_dict())
    img = torch.randn(1, 3, 96, 96)
    every = full.features(img)
    assert ablated.feature_ids == ids
    for got, i in zip(ablated.features(img), ids):
        assert torch.equal(got, every[i])  # the same backbone computation, a subset of its outputs
    mask = torch.zeros(1, 2, 96, 96)
    mask[..., 20:70, 30:60] = 1
    logits = ablated.kshot_logits(torch.randn(1, 3, 96, 96), torch.randn(1, 2, 3, 96, 96), mask)
    assert torch.isfinite(logits).all() and logits.shape == (1, 2, 2, 96, 96)


def test_one_level_learner_has_no_mixing_blocks_and_trains():
    model = HSNet("resnet50", pyramid_levels=1).train()
    names = {n.split(".")[1] for n, _ in model.hpn_learner.named_parameters(prefix="x")}
    assert names == {"encoder_layer4", "decoder1", "decoder2"}
    mask = torch.zeros(2, 64, 64)
    mask[:, 10:50, 10:50] = 1
    logits = model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64), mask)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.hpn_learner.parameters())
    with pytest.raises(ValueError, match="pyramid_levels"):
        HSNet("resnet50", pyramid_levels=2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"q": torch.zeros(1, 3, 64, 64, dtype=torch.uint8)},
            "query_img is torch.uint8 but the model is torch.float32",
        ),
        ({"q": torch.randn(1, 3, 64, 64, dtype=torch.float64)}, "query_img is torch.float64 but the model is"),
        ({"s": torch.randn(1, 1, 3, 64, 64, dtype=torch.float16)}, "support_imgs is torch.float16 .*autocast"),
        ({"q": torch.randn(1, 3, 64, 64).numpy()}, "must be a torch.Tensor, got ndarray"),
        ({"q": torch.full((1, 3, 64, 64), float("nan"))}, "query_img contains NaN or Inf"),
        ({"s": torch.full((1, 1, 3, 64, 64), float("inf"))}, "support_imgs contains NaN or Inf"),
        ({"s": torch.randn(1, 0, 3, 64, 64), "m": torch.ones(1, 0, 64, 64)}, "at least one query and one support"),
        ({"size": 100}, "size must be a pair"),
        ({"size": (0, 0)}, "size must be a pair"),
    ],
)
def test_predict_rejects_bad_values_before_the_network(models, change, message):
    args = {"q": torch.randn(1, 3, 64, 64), "s": torch.randn(1, 1, 3, 64, 64), "m": torch.ones(1, 1, 64, 64)}
    args.update(change)
    for model in (models["resnet50"], FastHSNet("resnet50").eval()):
        with pytest.raises(HSNetError, match=message):
            model.predict(args["q"], args["s"], args["m"], size=args.get("size"))


def test_following_the_dtype_advice_works():
    model, q = FastHSNet("resnet50").eval(), torch.randn(1, 3, 64, 64, dtype=torch.float64)
    s, m = torch.randn(1, 1, 3, 64, 64), torch.ones(1, 1, 64, 64)
    with pytest.raises(HSNetError, match=r"\.to\(torch.float32\)"):
        model.predict(q, s, m)
    assert model.predict(q.to(torch.float32), s, m).shape == (1, 64, 64)  # what the message says to do
    with pytest.raises(HSNetError, match="autocast"):
        model.predict(q.to(torch.bfloat16), s, m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.predict(q.float(), s, m).shape == (1, 64, 64)
    assert model.double().predict(q, s.double(), m).shape == (1, 64, 64)  # or the model in float64


@pytest.mark.parametrize("cls", [HSNet, FastHSNet], ids=["reference", "fast"])
@pytest.mark.parametrize("shot", [1, 2])
def test_learner_size_gives_the_logits_before_upsampling(cls, shot):
    """size="learner" returns the learner's own resolution; upsampling it as forward does gives the
    default output exactly (the same F.interpolate call on the same tensor)."""
    from hsnetlib.model import LEARNER

    torch.manual_seed(0)
    model = cls("resnet50").eval()
    q, s, m = torch.randn(1, 3, 70, 90), torch.randn(1, shot, 3, 70, 90), (torch.rand(1, shot, 70, 90) > 0.5).float()
    low = model.kshot_logits(q, s, m, size=LEARNER)
    assert low.shape == (1, shot, 2, 18, 24)  # twice the 9 x 12 grid of level 1 (stride 8) for 70 x 90
    up = torch.nn.functional.interpolate(low[0], (70, 90), mode="bilinear", align_corners=True)
    assert torch.equal(up, model.kshot_logits(q, s, m)[0])
    with pytest.raises(HSNetError, match="learner"):
        model.kshot_logits(q, s, m, size="quarter")
