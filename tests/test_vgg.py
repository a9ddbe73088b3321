"""VGG loss network: named activations, truncation, preprocessing flavours, weight files and downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastnst.errors import ConfigError, WeightsError
from fastnst.losses import LossSpec
from fastnst.models.vgg import CAFFE_FILE_NAMES, VGGFeatures, layer_names
from fastnst.pretrained import ENV_VAR, URLS, detect_flavour, load_vgg

from conftest import random_vgg_state


def _reference_activations(state, x_rgb01, flavour, names):
    """Independent forward: preprocessing written out by hand, convs read from the state dict by index."""
    if flavour == "caffe":
        x = x_rgb01[:, [2, 1, 0]] * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    else:
        x = (x_rgb01 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    # vgg16 blocks: conv indices per block in torchvision's features
    blocks = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
    out = {}
    for b, convs in enumerate(blocks):
        for i, idx in enumerate(convs):
            if f"features.{idx}.weight" not in state:
                return out
            x = F.relu(F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1))
            name = f"relu{b + 1}_{i + 1}"
            if name in names:
                out[name] = x
        x = F.max_pool2d(x, 2)
    return out


@pytest.mark.parametrize("flavour", ["torchvision", "caffe"])
def test_named_activations_match_an_independent_forward(flavour):
    state = random_vgg_state("vgg16", "relu3_3")
    net = VGGFeatures("vgg16", ["relu1_2", "relu2_2", "relu3_3"], flavour)
    net.load_state_dict(state)
    x = torch.rand(2, 3, 32, 40)
    ours = net(x)
    ref = _reference_activations(state, x, flavour, {"relu1_2", "relu2_2", "relu3_3"})
    assert set(ours) == set(ref) == {"relu1_2", "relu2_2", "relu3_3"}
    for name in ref:
        scale = ref[name].abs().max().item()
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-5 * scale)


def test_builds_only_up_to_the_deepest_requested_layer():
    net = VGGFeatures("vgg19", ["relu1_1", "relu2_1"])
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3  # conv1_1, conv1_2, conv2_1
    assert net.required_keys()[-1] == "features.5.bias"
    assert len(layer_names("vgg19")) == 16 and len(layer_names("vgg16")) == 13


def test_frozen_but_passes_gradients_to_the_image():
    net = VGGFeatures("vgg16", ["relu1_2"])
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    net(x)["relu1_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_layer_and_arch_list_the_valid_ones():
    with pytest.raises(ConfigError, match="relu5_3"):
        VGGFeatures("vgg16", ["relu9_9"])
    with pytest.raises(ConfigError, match="vgg16, vgg19"):
        VGGFeatures("vgg11", ["relu1_1"])


def test_loads_a_file_with_only_the_needed_layers(vgg_file):
    path = vgg_file("vgg19", "relu2_1")
    net = load_vgg("vgg19", ["relu1_1", "relu2_1"], path, flavour="caffe")
    assert net.flavour == "caffe"
    torch.testing.assert_close(net.features[0].weight, torch.load(path, weights_only=True)["features.0.weight"])
    assert load_vgg("vgg19", ["relu1_1"], path).flavour == "torchvision"  # auto: the name does not say caffe
    with pytest.raises(ConfigError, match="unknown VGG weight flavour 'bgr'; choose one of auto, torchvision, caffe"):
        load_vgg("vgg19", ["relu1_1"], path, flavour="bgr")
    with pytest.raises(ConfigError, match="unknown VGG weight flavour 'bgr'"):
        LossSpec(vgg="vgg19", vgg_weights=str(path), vgg_flavour="bgr")


def test_loads_full_torchvision_layout_and_ignores_classifier(vgg_file):
    path = vgg_file("vgg16", "relu2_2", extra={"classifier.0.weight": torch.zeros(4, 4)})
    net = load_vgg("vgg16", ["relu2_2"], path)
    assert net.flavour == "torchvision"


def test_missing_layer_is_one_line_naming_layer_and_file(vgg_file):
    path = vgg_file("vgg19", "relu2_1")
    with pytest.raises(WeightsError) as err:
        load_vgg("vgg19", ["relu3_1"], path)
    message = str(err.value)
    assert "relu2_2" in message and str(path) in message and "\n" not in message


def test_wrong_shape_is_reported(vgg_file):
    path = vgg_file("vgg16", "relu2_2", extra={"features.2.weight": torch.zeros(32, 64, 3, 3)})
    with pytest.raises(WeightsError, match=r"features.2.weight has shape \(32, 64, 3, 3\), vgg16 needs \(64, 64"):
        load_vgg("vgg16", ["relu2_2"], path)


def test_env_var_supplies_the_file(vgg_file, monkeypatch):
    path = vgg_file("vgg16", "relu1_2", name="my_caffe_vgg16.pth")
    monkeypatch.setenv(ENV_VAR, str(path))
    net = load_vgg("vgg16", ["relu1_2"])
    assert net.flavour == "caffe"  # detected from the file name


def test_flavour_detection_from_names():
    assert detect_flavour("vgg19_caffe_block1-3.pth") == "caffe"
    assert detect_flavour("/x/vgg16-00b39a1b.pth") == "caffe"
    assert detect_flavour("vgg16-397923af.pth") == "torchvision"
    assert detect_flavour(None) == "torchvision"
    official = {Path(url).name for (_, flavour), url in URLS.items() if flavour == "caffe"}
    assert official == set(CAFFE_FILE_NAMES) and all(detect_flavour(name) == "caffe" for name in official)


def test_no_file_and_no_network_is_one_actionable_line():
    with pytest.raises(WeightsError) as err:
        load_vgg("vgg16", ["relu2_2"])
    message = str(err.value)
    assert "\n" not in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert "--vgg-weights" in message and ENV_VAR in message


def test_uses_the_torch_hub_cache_without_downloading(tmp_path):
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = random_vgg_state("vgg16", "relu1_2")
    torch.save(state, cache / "vgg16-397923af.pth")
    net = load_vgg("vgg16", ["relu1_2"])
    torch.testing.assert_close(net.features[2].weight, state["features.2.weight"])


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="junk.pth: not a readable VGG weight file"):
        load_vgg("vgg16", ["relu1_2"], junk)
    with pytest.raises(WeightsError, match="not found"):
        load_vgg("vgg16", ["relu1_2"], tmp_path / "absent.pth")
