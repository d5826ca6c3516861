"""Contract tests for every registered architecture, plus the papers' published numbers.

Every model in the registry must map a batch of stamps to one finite logit per stamp, pass
gradients back to its first layer, and, in eval mode, score each stamp independently of
the rest of its batch. These run on CPU at reduced stamp sizes (see ``SMALL_SIZES``).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from lensnet.models import create_model, list_models, model_spec

BATCH = 2

# Reduced stamp sizes (one per branch) for the CPU tests. Models whose head flattens a
# feature map take ``input_size_px`` and are built at this size; the others are
# size-agnostic. A registered model missing here is tested at its registered size.
SMALL_SIZES: dict[str, tuple[int, ...]] = {
    "cas-swinburne": (48,),
    "deeplens": (32,),
    "efficientnet-b2": (64,),
    "efficientnet-b2-two-branch": (64, 32),
    "lastro-epfl": (72,),  # its valid convolutions need at least 69 px
    "lens-detector": (48,),
    "lensfinder": (48,),
    "lensflow": (48,),
    "lensresnet-small": (32,),
    "lensresnet-tiny": (32,),
    "lexactum-deeplens": (48,),
    "ou-200": (116,),  # the smallest stamp its valid convolutions accept
    "ou-66": (66,),
    "wsi-net": (48,),
}


def small_sizes(name: str) -> tuple[int, ...]:
    return SMALL_SIZES.get(name, model_spec(name).input_size_px)


def build(name: str, bands: int, sizes: tuple[int, ...] | None = None) -> nn.Module:
    """Build ``name`` for ``bands`` channels (per :func:`total_bands`) at ``sizes``."""
    spec = model_spec(name)
    sizes = spec.input_size_px if sizes is None else sizes
    overrides = {}
    if "input_size_px" in inspect.signature(spec.entry_point).parameters:
        # A head that flattens a feature map is sized for the stamp.
        overrides["input_size_px"] = sizes[0]
    torch.manual_seed(0)
    return create_model(name, bands=total_bands(name, bands), **overrides)


def total_bands(name: str, bands: int) -> int:
    # A two-branch model needs a band per branch: its high-resolution branch gets one band
    # (the default split) and the low-resolution branch gets ``bands``.
    return bands if model_spec(name).branches == 1 else 1 + bands


def make_inputs(
    name: str, model: nn.Module, bands: int, sizes: tuple[int, ...], batch: int = BATCH
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    if model_spec(name).branches == 1:
        return torch.randn(batch, bands, sizes[0], sizes[0], generator=generator)
    split = (model.high_res_bands, model.low_res_bands)
    return tuple(
        torch.randn(batch, channels, size, size, generator=generator)
        for channels, size in zip(split, sizes)
    )


def as_tuple(inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


ALL_MODELS = list_models()


def test_registry_holds_every_family() -> None:
    expected = {
        "deeplens",
        "cas-swinburne",
        "lastro-epfl",
        "lexactum-deeplens",
        "wsi-net",
        "lensflow",
        "lensfinder",
        "ou-66",
        "ou-200",
        "efficientnet-b2",
        "efficientnet-b2-two-branch",
        "lens-detector",
    }
    assert expected <= set(ALL_MODELS)
    assert model_spec("efficientnet-b2-two-branch").branches == 2


@pytest.mark.parametrize("bands", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_and_backward(name: str, bands: int) -> None:
    sizes = small_sizes(name)
    model = build(name, bands, sizes).train()
    inputs = make_inputs(name, model, bands, sizes)
    for tensor in as_tuple(inputs):
        tensor.requires_grad_(True)

    # Pre-hooks record the order in which layers *start*, so executed[0] is the first layer.
    executed: list[nn.Module] = []
    hooks = [
        module.register_forward_pre_hook(lambda module, args: executed.append(module))
        for module in model.modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    logits = model(inputs)
    for hook in hooks:
        hook.remove()

    assert logits.shape == (BATCH,)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()

    logits.sum().backward()
    first_layer = executed[0]
    assert first_layer.weight.grad is not None, f"no gradient reached {first_layer}"
    assert torch.isfinite(first_layer.weight.grad).all()
    assert first_layer.weight.grad.abs().sum() > 0, f"zero gradient at {first_layer}"
    for tensor in as_tuple(inputs):  # every branch passes gradient back to its input
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_scores_do_not_depend_on_the_batch(name: str) -> None:
    bands, sizes = 3, small_sizes(name)
    model = build(name, bands, sizes).eval()
    inputs = as_tuple(make_inputs(name, model, bands, sizes, batch=3))
    # Same first stamp, different companions.
    others = tuple(
        torch.cat([tensor[:1], 5.0 * torch.randn_like(tensor[1:]) + 3.0]) for tensor in inputs
    )
    alone = tuple(tensor[:1] for tensor in inputs)

    def score(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return model(batch if len(batch) > 1 else batch[0])

    first = score(inputs)[0]
    torch.testing.assert_close(score(others)[0], first, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score(alone)[0], first, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_runs_at_registered_input_size(name: str) -> None:
    model = build(name, 3).eval()
    inputs = make_inputs(name, model, 3, model_spec(name).input_size_px, batch=1)
    with torch.inference_mode():
        logits = model(inputs)
    assert logits.shape == (1,) and torch.isfinite(logits).all()


def n_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(("name", "published"), [("ou-66", 203_192), ("ou-200", 331_632)])
def test_ou_parameter_counts_match_wilde_2022(name: str, published: int) -> None:
    # Wilde et al. 2022, tables 3 and 4 ("Total Parameter Count"), four input bands.
    assert n_parameters(create_model(name, bands=4)) == published
    # A one-neuron output drops one row of the two-way softmax layer (and its bias).
    dense_width = {"ou-66": 500, "ou-200": 350}[name]
    assert n_parameters(create_model(name, bands=4, num_outputs=1)) == published - dense_width - 1


def test_ou_logit_is_the_lens_log_odds_of_the_softmax() -> None:
    model = create_model("ou-66", bands=4).eval()
    x = torch.randn(4, 4, 66, 66)
    with torch.no_grad():
        two_way = model.classifier(model.features(x).flatten(1))
        torch.testing.assert_close(torch.sigmoid(model(x)), two_way.softmax(dim=1)[:, 1])


def test_lexactum_parameter_range() -> None:
    # Magro et al. 2021, section 1.2.2: the networks' weights range "from around 100
    # thousand" (LensFlow, the smallest) "to around 6 million" (LASTRO EPFL), 101 px stamps.
    assert n_parameters(create_model("lensflow", bands=1)) == pytest.approx(100_000, rel=0.05)
    assert n_parameters(create_model("lastro-epfl", bands=1)) == pytest.approx(6_000_000, rel=0.1)


def test_deeplens_is_46_layers_deep() -> None:
    # Lanusse et al. 2018, section 3.1: "46 layers deep" = the stem plus 15 units of three
    # convolutions (shortcut projections are not counted); a 45 px stamp ends at 3 x 3.
    model = create_model("deeplens", bands=1)
    convs = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and "shortcut" not in name
    ]
    assert len(convs) == 46
    with torch.no_grad():
        assert model.levels(model.stem(torch.zeros(1, 1, 45, 45))).shape == (1, 512, 3, 3)


def test_two_branch_model_needs_a_band_per_branch() -> None:
    with pytest.raises(ValueError, match="one band per branch"):
        create_model("efficientnet-b2-two-branch", bands=1)
    model = create_model("efficientnet-b2-two-branch", bands=5, high_res_bands=2)
    assert (model.high_res_bands, model.low_res_bands) == (2, 3)


def test_efficientnet_loads_local_imagenet_weights(tmp_path) -> None:
    # Offline stand-in for ImageNet weights: a full 3-channel, 1000-class EfficientNet-B2
    # state dict. timm adapts the stem to each branch and drops the classifier.
    timm = pytest.importorskip("timm")
    source = timm.create_model("efficientnet_b2", pretrained=False)
    path = tmp_path / "efficientnet_b2.pth"
    torch.save(source.state_dict(), path)
    model = create_model("efficientnet-b2-two-branch", bands=4, pretrained_file=str(path))
    stem = source.conv_stem.weight
    torch.testing.assert_close(model.high_res.conv_stem.weight, stem.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.low_res.conv_stem.weight, stem)


def test_too_small_stamps_are_reported() -> None:
    with pytest.raises(ValueError, match="too small"):
        create_model("ou-200", bands=4, input_size_px=100)
    with pytest.raises(ValueError, match="too small"):
        create_model("lastro-epfl", bands=1, input_size_px=48)


def test_create_model_passes_overrides_and_drops_none() -> None:
    assert create_model("ou-66", bands=4, num_outputs=1).classifier[-1].out_features == 1
    assert create_model("ou-66", bands=4, num_outputs=None).classifier[-1].out_features == 2
    model = create_model("lens-detector", bands=2, num_layers=1, dropout=None)
    assert len(model.encoder.layers) == 1
    assert model.cnn[0].in_channels == 2


def test_create_model_rejects_unknown_names_and_bad_bands() -> None:
    with pytest.raises(KeyError) as error:
        create_model("no-such-model")
    message = str(error.value)
    assert "no-such-model" in message
    assert all(name in message for name in ("deeplens", "ou-66", "lens-detector"))
    with pytest.raises(ValueError):
        create_model("deeplens", bands=0)


def test_deflector_subtraction_cancels_a_red_deflector_and_keeps_a_blue_ring() -> None:
    from lensnet.models.lensresnet import DeflectorSubtraction
    from lensnet.preprocess import asinh_stretch

    ys, xs = np.mgrid[:64, :64] - 31.5  # where the simulator centres an object in an even stamp
    radius = np.hypot(xs, ys)
    deflector = 2000.0 * np.exp(-0.5 * (radius / 3.0) ** 2)
    ring = 40.0 * np.exp(-0.5 * ((radius - 9.0) / 1.0) ** 2)
    colours = np.array([0.3, 0.6, 1.0])  # g, r, i relative to i: a red galaxy
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, (2, 3, 64, 64))
    galaxy = colours[:, None, None] * deflector + noise[0]
    lens = colours[:, None, None] * deflector + np.array([1.0, 0.5, 0.0])[:, None, None] * ring + noise[1]
    stretched = torch.from_numpy(asinh_stretch(np.stack([galaxy, lens])))
    residual = DeflectorSubtraction(bands=3)(stretched)
    assert residual.shape == (2, 2, 64, 64) and residual.dtype == torch.float32
    core = (slice(None), 0, slice(28, 37), slice(28, 37))
    # the deflector's core is ~7 in the stretched g band and within the noise after subtraction
    assert stretched[core].abs().mean() > 5.0
    assert residual[core].abs().mean() < 0.5
    on_ring = (radius > 8) & (radius < 10)
    assert float(residual[1, 0][torch.from_numpy(on_ring)].mean()) > 3 * float(residual[0, 0][torch.from_numpy(on_ring)].abs().mean())
    # centred like the stamps, the view commutes with the augmentations' quarter turns and flips
    view = DeflectorSubtraction(bands=3)
    torch.testing.assert_close(view(torch.rot90(stretched, 1, (-2, -1))), torch.rot90(residual, 1, (-2, -1)),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(view(stretched.flip(-1)), residual.flip(-1), rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(DeflectorSubtraction(bands=3)(stretched.bfloat16() * 40)).all()
    with pytest.raises(ValueError, match="at least 2 bands"):
        DeflectorSubtraction(bands=1)


def test_a_deflector_subtracted_stem_starts_at_zero_so_an_extended_network_scores_as_before() -> None:
    torch.manual_seed(0)
    plain = create_model("lensresnet-fast", bands=3).eval()
    torch.manual_seed(0)
    extended = create_model("lensresnet-fast", bands=3, deflector_subtracted=True).eval()
    # from one seed, every shared layer starts from the same weights, so an A/B of the view is paired
    for key, value in plain.state_dict().items():
        assert torch.equal(extended.state_dict()[key], value), key
    torch.manual_seed(1)
    extended = create_model("lensresnet-fast", bands=3, deflector_subtracted=True).eval()
    missing, unexpected = extended.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["deflector_stem.weight"] and not unexpected
    stamps = torch.randn(4, 3, 64, 64) * 3
    with torch.no_grad():
        torch.testing.assert_close(extended(stamps), plain(stamps))
        extended.deflector_stem.weight.fill_(0.01)
        assert not torch.allclose(extended(stamps), plain(stamps))
