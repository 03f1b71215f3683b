"""The networks of section 4.2: sizes, shapes, shortcuts, responses, and equivalence with peer weights."""
import pytest
import torch
import torch.nn.functional as F

from resnet import TrainConfig, build_model
from resnet.models import (Block, CifarNet, Projection, ZeroPadShortcut, capture_responses, count_parameters,
                           from_peer_checkpoint)


# He et al. 2016 / ../shared/PAPER.md: exact counts for option A and plain nets (97,216 n - 21,926).
PAPER_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}


@pytest.mark.parametrize("depth", PAPER_PARAMS)
@pytest.mark.parametrize("shortcut", ["A", None])
def test_parameter_counts_match_the_paper(depth, shortcut):
    assert count_parameters(CifarNet(depth, shortcut)) == PAPER_PARAMS[depth]


@pytest.mark.parametrize("depth", [20, 56])
def test_projection_shortcuts_add_parameters_only_where_expected(depth):
    # B: a 1x1 conv + BN at the two places where the shape changes (16->32, 32->64).
    extra_b = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_parameters(CifarNet(depth, "B")) == PAPER_PARAMS[depth] + extra_b
    # C: one projection on every one of the 3n blocks.
    n = (depth - 2) // 6
    extra_c = extra_b + (n - 1) * (16 * 16 + 32) + (n - 1) * (32 * 32 + 64) + (n - 1) * (64 * 64 + 128) + (16 * 16 + 32)
    assert count_parameters(CifarNet(depth, "C")) == PAPER_PARAMS[depth] + extra_c


@pytest.mark.parametrize("depth", [8, 20, 32])
def test_output_and_stage_shapes(depth):
    model = CifarNet(depth)
    x = torch.randn(4, 3, 32, 32)
    stem = F.relu(model.bn1(model.conv1(x)))
    s1 = model.layer1(stem)
    s2 = model.layer2(s1)
    s3 = model.layer3(s2)
    assert (stem.shape, s1.shape, s2.shape, s3.shape) == (
        (4, 16, 32, 32), (4, 16, 32, 32), (4, 32, 16, 16), (4, 64, 8, 8))
    assert model(x).shape == (4, 10)
    assert len(model.response_layers()) == depth - 1  # every conv layer; the fc is the last layer


@pytest.mark.parametrize("depth", [0, 7, 9, 19, 21, 100])
def test_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarNet(depth)
    with pytest.raises(ValueError, match="6n\\+2"):
        TrainConfig(depth=depth)


def test_unknown_shortcut_is_refused():
    with pytest.raises(ValueError, match="shortcut"):
        CifarNet(20, "D")


def test_option_a_subsamples_and_pads_zero_channels():
    sc = ZeroPadShortcut(16, 32, 2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()
    assert not list(sc.parameters())


def test_shortcut_kinds_per_block():
    n = 3
    resnet, plain, b, c = CifarNet(20, "A"), CifarNet(20, None), CifarNet(20, "B"), CifarNet(20, "C")
    assert all(blk.shortcut is None for stage in (plain.layer1, plain.layer2, plain.layer3) for blk in stage)
    assert isinstance(resnet.layer2[0].shortcut, ZeroPadShortcut) and isinstance(resnet.layer2[1].shortcut, torch.nn.Identity)
    assert isinstance(b.layer2[0].shortcut, Projection) and isinstance(b.layer2[1].shortcut, torch.nn.Identity)
    assert sum(isinstance(blk.shortcut, Projection) for s in (c.layer1, c.layer2, c.layer3) for blk in s) == 3 * n


def test_build_model_follows_the_config():
    assert build_model(TrainConfig(net="plain", depth=32)).shortcut is None
    assert build_model(TrainConfig(net="resnet", depth=32, shortcut="B")).shortcut == "B"


def test_init_is_msra_and_bn_identity():
    torch.manual_seed(0)
    model = CifarNet(56)
    w = model.layer3[0].conv2.weight  # 64 -> 64, 3x3: fan_in 576
    assert abs(w.std().item() - (2 / 576) ** 0.5) < 0.003
    assert torch.equal(model.layer1[0].bn1.weight, torch.ones(16)) and not model.layer1[0].bn1.bias.any()


@pytest.mark.parametrize("shortcut", ["A", None])
def test_captured_responses_are_bn_outputs_before_addition(shortcut):
    torch.manual_seed(0)
    model = CifarNet(8, shortcut).eval()
    for m in model.modules():  # non-trivial BN so a wrong capture point shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
    x = torch.randn(3, 3, 32, 32)
    with capture_responses(model) as captured:
        model(x)
    responses = captured[0]
    # a hand-written forward of the stem and the first block
    stem = model.bn1(model.conv1(x))
    blk: Block = model.layer1[0]
    a = F.relu(stem)
    r1 = blk.bn1(blk.conv1(a))
    r2 = blk.bn2(blk.conv2(F.relu(r1)))
    assert len(responses) == 7
    for got, want in zip(responses[:3], (stem, r1, r2)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # the hooks are gone afterwards
    with capture_responses(model) as again:
        pass
    model(x)
    assert again == []


def _akamaster_forward(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The peer's forward, written from its published definition: option A pads planes//4 zero channels each side."""
    def bn(prefix, t):
        return F.batch_norm(t, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-5)

    out = F.relu(bn("bn1", F.conv2d(x, state["conv1.weight"], padding=1)))
    for stage in (1, 2, 3):
        i = 0
        while f"layer{stage}.{i}.conv1.weight" in state:
            p = f"layer{stage}.{i}"
            w1 = state[f"{p}.conv1.weight"]
            stride = 2 if stage > 1 and i == 0 else 1
            y = F.relu(bn(f"{p}.bn1", F.conv2d(out, w1, stride=stride, padding=1)))
            y = bn(f"{p}.bn2", F.conv2d(y, state[f"{p}.conv2.weight"], padding=1))
            if stride != 1 or w1.shape[0] != w1.shape[1]:
                planes = w1.shape[0]
                sc = F.pad(out[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
            else:
                sc = out
            out = F.relu(y + sc)
            i += 1
    out = F.avg_pool2d(out, out.size()[3]).view(out.size(0), -1)
    return F.linear(out, state["linear.weight"], state["linear.bias"])


@pytest.mark.parametrize("name, depth", [("akamaster-resnet20.th", 20), ("akamaster-resnet56.th", 56)])
def test_peer_weights_load_and_give_the_same_logits(name, depth, peers):
    path = peers / name
    model = from_peer_checkpoint(path)
    assert model.depth == depth and count_parameters(model) == PAPER_PARAMS[depth]
    raw = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    for k, v in model.state_dict().items():  # every weight held exactly
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _akamaster_forward(state, x), rtol=1e-5, atol=1e-5)


def test_peer_resnet20_recognises_the_test_images(real_data, peers):
    """Labels, channel order and layout of our data agree with official CIFAR-10: the peer's
    network (trained on the official images, ImageNet normalisation) classifies them well."""
    jpeg = real_data
    model = from_peer_checkpoint(peers / "akamaster-resnet20.th")
    x = torch.from_numpy(jpeg.test_x[::10]).permute(0, 3, 1, 2).float() / 255  # 1,000 images, 100 per class
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        pred = model((x - mean) / std).argmax(1)
    error = 100 * (pred != torch.from_numpy(jpeg.test_y[::10])).float().mean().item()
    # Measured here: 20.5% (the JPEG re-encoding costs a network trained on official images
    # much of its accuracy); a label or channel mix-up would sit near chance (90%).
    assert error < 35, f"peer ResNet-20 error {error:.1f}% on JPEG test images; its official-data error is 8.2%"


def test_loading_the_library_and_a_model_needs_torch_alone():
    import subprocess
    import sys

    from .conftest import ROOT

    code = ("import sys, resnet, resnet.models; import hubconf; "
            "print(sorted(m for m in ('matplotlib', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
