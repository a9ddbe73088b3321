"""TransformerNet: size handling, specs, and faithful conversion of pytorch/examples weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fastnst.checkpoint import convert_pytorch_examples, load_model
from fastnst.errors import ConfigError, ModelFileError
from fastnst.models.transformer import SPECS, TransformerNet, TransformerSpec, get_spec, macs_per_pixel


def test_default_spec_has_the_published_parameter_count():
    assert TransformerNet().num_parameters() == 1_679_235


@pytest.mark.parametrize("name", sorted(SPECS))
def test_macs_per_pixel_matches_torch_flop_counter(name):
    net = TransformerNet(SPECS[name])
    with FlopCounterMode(display=False) as counter:
        net(torch.rand(1, 3, 32, 32))
    # The counter sees convs (and nothing else it counts), 2 FLOPs per multiply-add.
    assert counter.get_total_flops() / 2 / (32 * 32) == macs_per_pixel(SPECS[name])
    if name == "johnson":
        assert macs_per_pixel(SPECS[name]) == 153_792


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (5, 7), (1, 40), (40, 1), (8, 8), (33, 18)])
def test_any_input_size_gives_the_same_output_size(light_net, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = light_net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_odd_size_is_edge_padded_then_cropped(light_net):
    x = torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        y = light_net(x)
        # Independent: pad to the next multiple of 4 by repeating the edge, run, crop.
        padded = F.pad(x, (0, 2, 0, 3), mode="replicate")
        expected = light_net(padded)[..., :13, :10]  # 16×12 needs no padding of its own
    torch.testing.assert_close(y, expected)


def test_fixed_norm_stats_reproduce_the_plain_forward_and_make_tiles_consistent(light_net):
    x = torch.rand(2, 3, 24, 16)
    with torch.no_grad():
        stats = light_net.compute_norm_stats(x)
        assert len(stats) == 3 + 2 * 3 + 2  # encoder, residual pairs, decoder
        # Independent: the statistics of the first norm's input are those of the first conv's output.
        first = light_net.encoder[0].conv(F.pad(x, (0, 0, 0, 0)))
        torch.testing.assert_close(stats[0][0], first.mean(dim=(2, 3)))
        torch.testing.assert_close(stats[0][1], first.var(dim=(2, 3), unbiased=False))
        torch.testing.assert_close(light_net(x, norm_stats=stats), light_net(x), rtol=1e-4, atol=1e-5)
        # With whole-image statistics a crop is normalised like the whole image: away from the crop's
        # border (the light net's receptive field is ~37 px), it matches the whole image's output.
        tall = torch.rand(1, 3, 160, 16)
        tall_stats = light_net.compute_norm_stats(tall)
        crop = light_net(tall[..., :100, :], norm_stats=tall_stats)
        whole = light_net(tall)
        torch.testing.assert_close(crop[..., :40, :], whole[..., :40, :], rtol=1e-3, atol=1e-4)
        own_stats = light_net(tall[..., :100, :])
        assert (own_stats[..., :40, :] - whole[..., :40, :]).abs().max() > 1e-3


def test_spec_registry_lists_valid_names_on_error():
    with pytest.raises(ConfigError, match="johnson.*light|light.*johnson"):
        get_spec("nope")
    assert get_spec("light").channels == (16, 32, 64)


def test_spec_round_trips_and_rejects_unknown_fields():
    spec = TransformerSpec(channels=(8, 16, 24), num_residual=2)
    assert TransformerSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown network spec field"):
        TransformerSpec.from_dict({"channels": [8, 16, 24], "depth": 3})
    with pytest.raises(ConfigError):
        TransformerSpec(channels=(8, 16))


# An independent implementation of the pytorch/examples network (0–255 images, its key names),
# written with functional ops only, to check the converter against.
def _examples_forward(sd: dict[str, torch.Tensor], x255: torch.Tensor, residual_blocks: int = 5) -> torch.Tensor:
    def conv(x, name, kernel, stride=1):
        x = F.pad(x, [kernel // 2] * 4, mode="reflect")
        return F.conv2d(x, sd[f"{name}.conv2d.weight"], sd[f"{name}.conv2d.bias"], stride)

    def norm(x, name):
        return F.instance_norm(x, weight=sd[f"{name}.weight"], bias=sd[f"{name}.bias"], eps=1e-5)

    y = F.relu(norm(conv(x255, "conv1", 9), "in1"))
    y = F.relu(norm(conv(y, "conv2", 3, 2), "in2"))
    y = F.relu(norm(conv(y, "conv3", 3, 2), "in3"))
    for i in range(1, residual_blocks + 1):
        r = F.relu(norm(conv(y, f"res{i}.conv1", 3), f"res{i}.in1"))
        y = y + norm(conv(r, f"res{i}.conv2", 3), f"res{i}.in2")
    y = F.relu(norm(conv(F.interpolate(y, scale_factor=2, mode="nearest"), "deconv1", 3), "in4"))
    y = F.relu(norm(conv(F.interpolate(y, scale_factor=2, mode="nearest"), "deconv2", 3), "in5"))
    return conv(y, "deconv3", 9)


def _random_examples_state(seed: int = 0, legacy_running_stats: bool = True) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    shapes = {"conv1": (32, 3, 9), "conv2": (64, 32, 3), "conv3": (128, 64, 3),
              "deconv1": (64, 128, 3), "deconv2": (32, 64, 3), "deconv3": (3, 32, 9)}
    shapes.update({f"res{i}.conv{j}": (128, 128, 3) for i in range(1, 6) for j in (1, 2)})
    sd = {}
    for name, (cout, cin, k) in shapes.items():
        sd[f"{name}.conv2d.weight"] = torch.randn(cout, cin, k, k) / (cin * k * k) ** 0.5
        sd[f"{name}.conv2d.bias"] = torch.randn(cout) * 0.1
    norms = {"in1": 32, "in2": 64, "in3": 128, "in4": 64, "in5": 32}
    norms.update({f"res{i}.in{j}": 128 for i in range(1, 6) for j in (1, 2)})
    for name, c in norms.items():
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c)
        if legacy_running_stats:
            sd[f"{name}.running_mean"] = torch.zeros(c)
            sd[f"{name}.running_var"] = torch.ones(c)
    sd["deconv3.conv2d.weight"] *= 100  # outputs in the 0–255 range, as trained models produce
    sd["deconv3.conv2d.bias"] += 128
    return sd


def test_converted_examples_model_computes_the_same_picture(tmp_path):
    sd = _random_examples_state()
    path = tmp_path / "legacy.pth"
    torch.save(sd, path)
    model, info = load_model(path)
    assert info.source == "pytorch-examples" and info.spec == TransformerSpec()
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        ours = model(x) * 255
        reference = _examples_forward(sd, x * 255)
    assert reference.abs().max() > 10  # the reference really produces a picture-scale output
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=2e-3)


def test_converter_drops_running_stats_and_rejects_foreign_keys():
    converted = convert_pytorch_examples(_random_examples_state())
    assert not any("running" in key for key in converted)
    assert set(converted) == set(TransformerNet().state_dict())
    with pytest.raises(ModelFileError, match="not a pytorch/examples"):
        convert_pytorch_examples({"fc.weight": torch.zeros(1)})
    bad = _random_examples_state(legacy_running_stats=False)
    bad["extra.layer.weight"] = torch.zeros(1)
    with pytest.raises(ModelFileError, match="unexpected key 'extra.layer.weight'"):
        convert_pytorch_examples(bad)
