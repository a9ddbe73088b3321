"""Several styles in one model: conditional instance norm, choosing and mixing styles, training, files, CLI.

Random ``light`` networks whose norm rows differ per style, tiny generated photos,
random VGG16 weights up to relu2_2. Independent references: a plain single-style
network built from one style's rows (or from averaged rows) must compute what the
multi-style network computes for that style (or that mix).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from torch import nn

from fastnst.backends.torch import TorchBackend
from fastnst.checkpoint import ModelInfo, load_model, read_info, save_model
from fastnst.cli import main
from fastnst.convert import ConvertConfig, MergeError, convert_model, merge_models
from fastnst.errors import ConfigError
from fastnst.images import decode_thumbnail, to_uint8
from fastnst.losses import LossSpec, content_targets, perceptual_losses
from fastnst.models.transformer import SPECS, ConditionalInstanceNorm, TransformerNet, norm_rows
from fastnst.models.vgg import VGGFeatures
from fastnst.styles import resolve_style
from fastnst.stylize import Stylizer
from fastnst.train import TrainConfig, fit
from fastnst.train.styles import StyleDraw, StyleTargets, add_styles, train_only_rows, training_network

from conftest import gradient_image, psnr, random_vgg_state

NAMES = ("starry", "wave", "mosaic")


pytestmark = pytest.mark.usefixtures("one_thread")


def multi_net(num_styles: int = 3, seed: int = 0) -> TransformerNet:
    """A light network whose styles differ clearly: every norm row drawn at random."""
    torch.manual_seed(seed)
    net = TransformerNet(SPECS["light"].with_styles(num_styles)).eval()
    with torch.no_grad():
        for _, norm in net.norm_layers():
            norm.weight.copy_(1 + 0.5 * torch.randn_like(norm.weight))
            norm.bias.copy_(0.5 * torch.randn_like(norm.bias))
    return net


def single_from(net: TransformerNet, weights: torch.Tensor) -> TransformerNet:
    """An independent plain network: the shared weights of ``net`` and the norm rows mixed by ``weights``."""
    single = TransformerNet(SPECS["light"]).eval()
    state = {}
    for key, value in net.state_dict().items():
        state[key] = (weights[:, None] * value).sum(0) if key.endswith(("norm.weight", "norm.bias", "norm1.weight",
                                                                        "norm1.bias", "norm2.weight", "norm2.bias")) \
            else value
    single.load_state_dict(state)
    return single


def stylizer(net: TransformerNet, **options) -> Stylizer:
    """A ``Stylizer`` of ``net`` whose styles are called ``NAMES``."""
    return Stylizer(TorchBackend(net, "cpu", ModelInfo(spec=net.spec, styles=NAMES[:net.spec.num_styles])),
                    **{"tile_size": 4096, **options})


def photos(batch: int = 2, height: int = 36, width: int = 44) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(gradient_image(width, height, seed=i))).permute(2, 0, 1).float()
                        / 255 for i in range(batch)])


# -- the network ---------------------------------------------------------------------------------

def test_each_style_is_its_own_plain_network_and_index_equals_a_unit_mix():
    net, x = multi_net(), photos()
    with torch.no_grad():
        outputs = []
        for i, name in enumerate(NAMES):
            by_index = stylizer(net, style=i)(x)
            by_name = stylizer(net, style=name)(x)
            by_mix = stylizer(net, style_mix={name: 1.0})(x)
            by_string = stylizer(net, style_mix=f"{name}=2")(x)
            assert torch.equal(by_index, by_mix) and torch.equal(by_index, by_name) and torch.equal(by_index, by_string)
            raw = net(x, style=torch.nn.functional.one_hot(torch.tensor(i), 3).float())
            reference = single_from(net, torch.nn.functional.one_hot(torch.tensor(i), 3).float())(x)
            torch.testing.assert_close(raw, reference, atol=1e-5, rtol=1e-5)
            outputs.append(raw)
    # the styles really differ, so the checks above could fail
    assert (outputs[0] - outputs[1]).abs().max() > 0.05 and (outputs[1] - outputs[2]).abs().max() > 0.05


def test_a_half_half_mix_lies_between_its_styles():
    net, x = multi_net(), photos()
    mix = torch.from_numpy(resolve_style(NAMES, mix="starry=1,wave=1"))
    assert mix.tolist() == [0.5, 0.5, 0.0]
    for _, norm in net.norm_layers():
        scale, shift = norm.affine(mix[None])
        for mixed, rows in ((scale[0], norm.weight), (shift[0], norm.bias)):
            low, high = torch.minimum(rows[0], rows[1]), torch.maximum(rows[0], rows[1])
            assert bool(((mixed >= low - 1e-6) & (mixed <= high + 1e-6)).all())
            torch.testing.assert_close(mixed, (rows[0] + rows[1]) / 2)
    with torch.no_grad():
        blended = net(x, style=mix)
        torch.testing.assert_close(blended, single_from(net, mix)(x), atol=1e-5, rtol=1e-5)
        for i in (0, 1):
            assert (blended - net(x, style=torch.eye(3)[i])).abs().max() > 0.02


def test_per_image_styles_in_one_batch_equal_separate_runs():
    net, x = multi_net(), photos(3)
    style = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0.2, 0.3, 0.5]])
    with torch.no_grad():
        together = net(x, style=style)
        for i in range(3):
            torch.testing.assert_close(together[i:i + 1], net(x[i:i + 1], style=style[i]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"style weights of shape \(2, 3\)"):
        net(x, style=style[:2])


def test_tiling_keeps_working_with_a_style_mix():
    net = multi_net()
    image = photos(1, 200, 230)
    whole = stylizer(net, style_mix="wave=0.3,mosaic=0.7")(image)
    tiled = stylizer(net, style_mix="wave=0.3,mosaic=0.7", tile_size=128, tile_stats="exact")
    assert tiled.tiles(200, 230) > 1
    torch.testing.assert_close(tiled(image), whole, atol=2e-4, rtol=0)
    other = stylizer(net, style="starry")(image)
    assert (other - whole).abs().max() > 0.05


def test_style_choice_errors_name_the_models_styles():
    with pytest.raises(ConfigError, match=r"no style 'nope'; its styles are 0=starry, 1=wave, 2=mosaic"):
        resolve_style(NAMES, "nope")
    with pytest.raises(ConfigError, match="no style 3; its styles"):
        resolve_style(NAMES, 3)
    with pytest.raises(ConfigError, match="finite and >= 0"):
        resolve_style(NAMES, mix="starry=-1,wave=2")
    with pytest.raises(ConfigError, match="sum to 0"):
        resolve_style(NAMES, mix="starry=0")
    with pytest.raises(ConfigError, match="NAME=WEIGHT"):
        resolve_style(NAMES, mix="starry:0.5")
    with pytest.raises(ConfigError, match="not both"):
        resolve_style(NAMES, 0, "starry=1")


# -- training ------------------------------------------------------------------------------------

@pytest.fixture
def setup(tmp_path, vgg_file):
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(8):
        gradient_image(40 + 3 * i, 36, seed=i).save(data / f"p{i}.jpg")
    styles = []
    for i, name in enumerate(NAMES):
        path = tmp_path / f"{name}.png"
        gradient_image(40, 40, seed=50 + i).rotate(90 * i).save(path)
        styles.append(str(path))
    return {"data": data, "styles": styles, "vgg": str(vgg_file("vgg16", "relu2_2")), "tmp": tmp_path}


def loss_spec(setup) -> LossSpec:
    return LossSpec(vgg="vgg16", vgg_weights=setup["vgg"], content_layers="relu2_2", style_layers="relu1_2,relu2_2",
                    content_weight=1.0, style_weight=1e3)


def config(setup, styles, name, **overrides) -> TrainConfig:
    options = dict(style=tuple(styles), data=str(setup["data"]), output=str(setup["tmp"] / f"{name}.safetensors"),
                   spec="light", loss=loss_spec(setup), image_size=32, batch_size=4, steps=2, workers=0,
                   checkpoint_every=0, sample_every=0, log_every=1, holdout=0)
    options.update(overrides)
    return TrainConfig(**options)


def test_style_draw_mixes_styles_in_a_batch_and_is_a_function_of_the_step():
    draw = StyleDraw(range(3), 3, seed=7)
    picks = [draw(step, 8)[0] for step in range(4)]
    assert any(len(set(p.tolist())) > 1 for p in picks)
    assert all(torch.equal(p, draw(step, 8)[0]) for step, p in enumerate(picks))
    assert set(torch.cat(picks).tolist()) == {0, 1, 2}
    only_new = StyleDraw(range(2, 4), 4, seed=7)(0, 16)
    assert set(only_new[0].tolist()) <= {2, 3} and torch.equal(only_new[1].argmax(1), only_new[0])


def test_mixed_style_batch_losses_match_the_plain_losses_item_by_item():
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", ["relu1_2", "relu2_2"])
    vgg.load_state_dict(random_vgg_state("vgg16", "relu2_2"))
    spec = LossSpec(content_layers="relu2_2", style_layers="relu1_2,relu2_2:0.5", content_weight=2.0, style_weight=1.0)
    image, content = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    targets = content_targets(vgg, content, spec)
    grams = {name: torch.rand(2, c, c) * 1e-2 for name, c in (("relu1_2", 64), ("relu2_2", 128))}
    weights = torch.tensor([3.0, 5.0])
    losses = perceptual_losses(vgg, image, targets, grams, spec, item_weights=weights)
    expected_style = 0
    for i in range(2):  # independent: each item alone through perceptual_losses with its own weight
        item_spec = LossSpec(content_layers="relu2_2", style_layers="relu1_2,relu2_2:0.5", content_weight=2.0,
                             style_weight=float(weights[i]))
        item = perceptual_losses(vgg, image[i:i + 1], {k: v[i:i + 1] for k, v in targets.items()},
                                 {k: v[i:i + 1] for k, v in grams.items()}, item_spec)
        expected_style += item["style"] / 2
    torch.testing.assert_close(losses["style"], expected_style, rtol=1e-5, atol=0)
    plain = perceptual_losses(vgg, image, targets, grams, spec)
    torch.testing.assert_close(losses["content"], plain["content"])


def test_training_three_styles_gives_finite_losses_and_a_three_style_model(setup):
    history = []
    path = fit(config(setup, setup["styles"], "three", style_weights=(1e3, 2e3, 5e2), style_names=NAMES),
               callback=lambda step, metrics: history.append(metrics))
    assert len(history) == 2 and all(math.isfinite(v) for m in history for v in m.values())
    assert all(m["style"] > 0 for m in history)
    net, info = load_model(path)
    assert info.styles == NAMES and info.spec.num_styles == 3
    assert info.config["style_weights"] == [1e3, 2e3, 5e2]
    assert all(isinstance(n, ConditionalInstanceNorm) and n.weight.shape[0] == 3 for _, n in net.norm_layers())


def test_each_item_is_scored_against_its_own_styles_grams_with_its_own_weight(setup):
    """What the three-style run scores each batch item with: its drawn style's Grams (the style image's own, from
    an independent Gram computation) and that style's --style-weight."""
    from fastnst.images import load_style_image
    from fastnst.pretrained import load_loss_network

    run = config(setup, setup["styles"], "three", style_weights=(1e3, 2e3, 5e2), style_names=NAMES)
    vgg = load_loss_network(run.loss)
    targets = StyleTargets(vgg, run, 0, 3, run.loss, torch.device("cpu"))
    own = []
    with torch.no_grad():
        for path in setup["styles"]:
            feats = vgg(load_style_image(path))
            own.append({n: (f.flatten(2) @ f.flatten(2).transpose(1, 2)) / f[0].numel() for n, f in feats.items()})
    seen = set()
    for step in range(6):
        style, grams, weights = targets.for_step(step, 4)
        picks = style.argmax(1).tolist()
        seen.update(picks)
        assert torch.equal(style, torch.eye(3)[picks])
        assert weights.tolist() == [run.style_weights[p] for p in picks]
        for i, pick in enumerate(picks):
            for layer in ("relu1_2", "relu2_2"):
                torch.testing.assert_close(grams[layer][i], own[pick][layer][0], rtol=1e-4, atol=1e-6)
    assert seen == {0, 1, 2}


def test_adding_a_style_trains_only_its_rows_and_old_styles_stay_bit_identical(setup):
    base_path = fit(config(setup, setup["styles"][:2], "base", style_names=NAMES[:2]))
    base, _ = load_model(base_path)
    grown_path = fit(config(setup, setup["styles"][2:], "grown", init=str(base_path), style_names=NAMES[2:],
                            steps=3, lr=0.05, keep_init_styles=True))
    grown, info = load_model(grown_path)
    assert info.styles == NAMES and info.config["init"] == str(base_path)
    x = photos()
    with torch.no_grad():
        for i in range(2):
            assert torch.equal(base(x, style=torch.eye(2)[i]), grown(x, style=torch.eye(3)[i]))
    old, new = base.state_dict(), grown.state_dict()
    norm_keys = {f"{name}.{p}" for name, _ in grown.norm_layers() for p in ("weight", "bias")}
    for key, value in new.items():
        if key in norm_keys:
            assert torch.equal(value[:2], old[key])
            assert not torch.equal(value[2], old[key].mean(0)), f"{key}: the new style did not train"
        else:
            assert torch.equal(value, old[key])


def test_a_model_trained_from_init_keeps_the_init_s_training_record_even_across_a_resume(setup):
    base_path = fit(config(setup, setup["styles"][:1], "base1", style_names=NAMES[:1]))
    base_record = read_info(base_path).config
    grown = config(setup, setup["styles"][1:2], "grown1", init=str(base_path), style_names=NAMES[1:2], steps=1)
    assert read_info(fit(grown)).config["init_record"] == base_record
    # The init file changes before the run is extended: the record is still the one the run started from.
    base, _ = load_model(base_path)
    save_model(base_path, base, styles=NAMES[:1], config={**base_record, "steps_done": 99})
    extended = read_info(fit(dataclasses.replace(grown, steps=2, resume="auto"))).config
    assert extended["steps_done"] == 2 and extended["init_record"] == base_record
    assert read_info(fit(config(setup, setup["styles"][:1], "plain", steps=1))).config["init_record"] is None


def test_init_trains_all_moves_every_layer_by_the_same_fraction_of_its_size(setup):
    base_path = fit(config(setup, setup["styles"][:1], "trunk", style_names=NAMES[:1]))
    base, _ = load_model(base_path)
    # A trunk like the converted pytorch/examples one: first layer's weights 250x larger, last one's 200x smaller.
    state = base.state_dict()
    convs = [key for key, value in state.items() if value.dim() == 4]
    state[convs[0]] *= 250
    state[convs[-1]] /= 200
    base.load_state_dict(state)
    save_model(base_path, base, styles=NAMES[:1], config=read_info(base_path).config)
    lr = 1e-3
    tuned_path = fit(config(setup, setup["styles"][1:2], "tuned", init=str(base_path), style_names=NAMES[1:2],
                            steps=1, lr=lr, init_trains="all"))
    tuned = load_model(tuned_path)[0].state_dict()
    sizes = {key: state[key].pow(2).mean().sqrt().item() for key in convs}
    median = float(np.median(list(sizes.values())))
    for key in convs:
        # Adam's first step moves each weight by its group's lr (m / sqrt(v) = sign of the gradient).
        step = (tuned[key].float() - state[key].float()).abs()
        moved = step[step > 0]
        assert moved.numel() > 0.9 * step.numel(), key
        np.testing.assert_allclose(moved.median().item(), lr * sizes[key] / median, rtol=0.05, err_msg=key)
    rows = [f"{name}.weight" for name, _ in load_model(tuned_path)[0].norm_layers()]
    moved_rows = torch.cat([(tuned[key] - state[key]).abs() for key in rows])  # single-style: one row each
    np.testing.assert_allclose(moved_rows.median().item(), lr, rtol=0.05)  # the new style's rows: the plain lr
    info = read_info(tuned_path)
    assert info.styles == NAMES[1:2] and info.config["init_trains"] == "all"


@pytest.mark.parametrize("overrides, message", [
    ({"init_trains": "all"}, "give --init MODEL"),
    ({"init_trains": "all", "init": "m.safetensors", "keep_init_styles": True}, "not --keep-init-styles"),
    ({"init_trains": "some", "init": "m.safetensors"}, "unknown --init-trains 'some'"),
])
def test_init_trains_is_validated(setup, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(setup, setup["styles"][:1], "x", **overrides)


def test_train_only_rows_masks_the_gradient_of_old_rows():
    net = add_styles(multi_net(2), 1)
    params = train_only_rows(net, 2)
    assert not any(p.requires_grad for name, p in net.named_parameters() if "conv" in name)
    net(photos(1), style=torch.tensor([0.2, 0.3, 0.5])).square().mean().backward()
    for p in params:
        assert p.grad[:2].abs().max() == 0 and p.grad[2].abs().max() > 0


def test_a_style_retrained_under_its_own_name_starts_from_its_rows_a_new_one_from_their_mean(tmp_path):
    base = multi_net(3)
    path = save_model(tmp_path / "base.safetensors", base, styles=NAMES[:3])
    net, names, first = training_network(base.spec, (NAMES[1], "new"), str(path))
    assert names == (NAMES[0], f"{NAMES[1]} (init)", NAMES[2], NAMES[1], "new") and first == 3
    old, grown = norm_rows(base), norm_rows(net)
    for key, rows in old.items():
        assert torch.equal(grown[key][:3], rows) and torch.equal(grown[key][3], rows[1]), key
        torch.testing.assert_close(grown[key][4], rows.sum(0) / 3, rtol=0, atol=1e-6, msg=key)


def test_adding_to_a_single_style_model_keeps_it(tmp_path):
    torch.manual_seed(1)
    single = TransformerNet(SPECS["light"]).eval()
    grown = add_styles(single, 2).eval()
    assert grown.spec.num_styles == 3
    with torch.no_grad():
        torch.testing.assert_close(grown(photos(), style=torch.eye(3)[0]), single(photos()), atol=1e-5, rtol=1e-5)


# -- files ---------------------------------------------------------------------------------------

def test_save_load_round_trip_and_single_style_metadata_unchanged(tmp_path, model_file):
    net = multi_net()
    path = save_model(tmp_path / "multi.safetensors", net, styles=NAMES)
    loaded, info = load_model(path)
    assert info.styles == NAMES and info.spec == net.spec
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["spec"])["num_styles"] == 3
        assert f.get_tensor("encoder.0.norm.weight").shape == (3, 16)
    with safe_open(str(model_file), framework="pt") as f:
        assert json.loads(f.metadata()["spec"]) == {"channels": [16, 32, 64], "num_residual": 3}
        assert f.get_tensor("encoder.0.norm.weight").shape == (16,)
    with pytest.raises(ConfigError, match="2 style name"):
        save_model(tmp_path / "bad.safetensors", net, styles=NAMES[:2])


def test_merge_one_style_files_into_one_model_and_refuse_separately_trained_ones(tmp_path):
    net = multi_net()
    parts = []
    for i, name in enumerate(NAMES):
        parts.append(str(save_model(tmp_path / f"{name}.safetensors", single_from(net, torch.eye(3)[i]),
                                    styles=[name], config={"steps_done": 100 + i})))
    merged_path = convert_model(ConvertConfig(source=None, output=str(tmp_path / "merged.safetensors"),
                                              merge=tuple(parts)))
    merged, info = load_model(merged_path)
    assert info.styles == NAMES and info.config["merged_from"] == [f"{n}.safetensors" for n in NAMES]
    assert info.config["parts"] == [{"steps_done": 100 + i} for i in range(3)]  # each part's record, whole
    for key, value in net.state_dict().items():
        assert torch.equal(merged.state_dict()[key], value)
    # fp16 is recorded (a card's merge command must round the same way to reproduce what trained from it).
    halved = convert_model(ConvertConfig(source=None, output=str(tmp_path / "half.safetensors"), merge=tuple(parts),
                                         half=True))
    assert (info.config["half"], read_info(halved).config["half"]) == (False, True)
    with safe_open(str(halved), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    torch.manual_seed(5)
    stranger = save_model(tmp_path / "stranger.safetensors", TransformerNet(SPECS["light"]), styles=["other"])
    with pytest.raises(MergeError, match="shared weights differ.*trained separately share no encoder/decoder"):
        merge_models([(load_model(p)[0], p) for p in (parts[0], str(stranger))])


# -- the command line and the ONNX path ---------------------------------------------------------

def test_cli_train_info_stylize_export_merge(setup, capsys):
    tmp = setup["tmp"]
    model = tmp / "cli3.safetensors"
    args = ["train", "--style", *setup["styles"], "--style-name", *NAMES, "--data", str(setup["data"]), "-o",
            str(model), "--spec", "light", "--image-size", "32", "--batch-size", "3", "--steps", "2", "--workers", "0",
            "--holdout", "0", "--sample-every", "0", "--checkpoint-every", "0", "--vgg", "vgg16",
            "--vgg-weights",
            setup["vgg"], "--style-layers", "relu1_2,relu2_2", "--content-weight", "1", "--style-weight", "1e3", "2e3",
            "5e2"]
    assert main(args) == 0
    assert main(["info", str(model)]) == 0
    assert "styles           3: 0=starry, 1=wave, 2=mosaic" in capsys.readouterr().out
    net, info = load_model(model)
    # Two steps leave the styles nearly alike; spread their rows so that choosing one visibly matters.
    with torch.no_grad():
        for _, norm in net.norm_layers():
            norm.weight.add_(0.3 * torch.randn_like(norm.weight))
            norm.bias.add_(0.3 * torch.randn_like(norm.bias))
    save_model(model, net, styles=info.styles, config=info.config)

    photo = tmp / "photo.png"
    gradient_image(45, 37, seed=9).save(photo)
    x = torch.from_numpy(np.array(gradient_image(45, 37, seed=9))).permute(2, 0, 1)[None].float() / 255
    runs = {"byname": ["--style", "wave"], "byindex": ["--style", "1"], "mix": ["--style-mix", "starry=0.7,mosaic=0.3"],
            "mixhalf": ["--style-mix", "starry=0.7,mosaic=0.3", "--strength", "0.5"]}
    out = {}
    for name, extra in runs.items():
        assert main(["stylize", "-m", str(model), str(photo), "-o", str(tmp / name), "--backend", "torch",
                     "--format", "png", *extra]) == 0
        out[name] = np.asarray(Image.open(tmp / name / "photo.png"), dtype=np.float64)
    assert np.array_equal(out["byname"], out["byindex"])
    with torch.no_grad():
        raw = net(x, style=torch.tensor([0.7, 0.0, 0.3]))
    for name, picture in (("mix", raw), ("mixhalf", (raw + x) / 2)):
        expected = picture.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(out[name] - expected).max() <= 1.0
    assert np.abs(out["mix"] - out["byname"]).max() > 5

    capsys.readouterr()
    assert main(["stylize", "-m", str(model), str(photo), "-o", str(tmp / "bad"), "--backend", "torch",
                 "--style", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fastnst stylize: error: --style: the model has no style 'nope'; its styles are 0=starry, 1=wave, " \
                  "2=mosaic"
    assert main(["stylize", "-m", str(model), str(photo), "-o", str(tmp / "bad"), "--backend", "torch",
                 "--style-mix", "wave=-1"]) == 2
    assert "weights must be finite and >= 0" in capsys.readouterr().err

    # export: one graph with a style input, run by the onnxruntime backend like torch
    onnx_path = tmp / "cli3.onnx"
    assert main(["export", str(model), "-o", str(onnx_path)]) == 0
    assert "style: float32 (batch, 3) style weights" in capsys.readouterr().out
    from fastnst.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend.from_file(onnx_path, device="cpu")
    assert [i.name for i in backend.model.graph.input] == ["image", "style"]
    for choice in ({"style": "mosaic"}, {"style_mix": "wave=0.5,mosaic=0.5"}):
        ort_out = Stylizer(backend, tile_size=4096, **choice)(x)
        torch_out = stylizer(net, tile_size=4096, **choice)(x)
        torch.testing.assert_close(ort_out, torch_out, atol=1e-4, rtol=0)
        stats = "exact" if "style" in choice else "thumbnail"  # both tiling paths take the style
        ort_tiled = Stylizer(backend, tile_size=128, tile_stats=stats, **choice)
        torch_tiled = stylizer(net, tile_size=128, tile_stats=stats, **choice)
        big = photos(1, 180, 170)
        torch.testing.assert_close(ort_tiled(big), torch_tiled(big), atol=1e-4, rtol=0)

    # convert --merge: refused for separately trained models, with what to do instead
    torch.manual_seed(3)
    other = save_model(tmp / "other.safetensors", TransformerNet(SPECS["light"]), styles=["other"])
    assert main(["convert", "--merge", str(model), str(other), "-o", str(tmp / "merged.safetensors")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained separately share no encoder/decoder" in err[0] and "--init" in err[0]
    assert main(["convert", "--merge", str(model), "-o", str(tmp / "merged.safetensors")]) == 2


def test_cli_merge_of_a_model_and_its_extension(setup, capsys):
    base = fit(config(setup, setup["styles"][:1], "one", style_names=NAMES[:1]))
    grown = fit(config(setup, setup["styles"][1:], "two", init=str(base), style_names=NAMES[1:], steps=1,
                       keep_init_styles=True))
    out = setup["tmp"] / "both.safetensors"
    assert main(["convert", "--merge", str(base), str(grown), "-o", str(out)]) == 2
    assert "appear more than once" in capsys.readouterr().err
    assert main(["convert", "--merge", str(base), str(grown), "-o", str(out), "--style-name", "a", "b", "c",
                 "d"]) == 0
    merged, info = load_model(out)
    assert info.styles == ("a", "b", "c", "d")
    # Thumbnails follow the styles: the extension kept its base's and added its own; merging concatenates.
    assert read_info(grown).thumbnails[:1] == read_info(base).thumbnails
    assert info.thumbnails == read_info(base).thumbnails + read_info(grown).thumbnails
    images = [np.asarray(Image.open(style).convert("RGB")) for style in setup["styles"]]  # small: kept as they are
    for i, thumbnail in enumerate(info.thumbnails[1:]):
        decoded = to_uint8(decode_thumbnail(thumbnail)).permute(1, 2, 0).numpy()
        scores = [psnr(decoded, image) for image in images]
        assert scores[i] > 27 and max(scores[:i] + scores[i + 1:]) < 15  # JPEG of a noisy picture, and the right one
    # --select: some styles of it, in the order asked; one style is a single-style file that loads alone.
    x = photos()
    single, pair = setup["tmp"] / "c.safetensors", setup["tmp"] / "db.safetensors"
    assert main(["convert", str(out), "--select", "c", "-o", str(single)]) == 0
    assert main(["convert", str(out), "--select", "d", "1", "-o", str(pair)]) == 0
    one, one_info = load_model(single)
    two, two_info = load_model(pair)
    assert one_info.styles == ("c",) and one.spec.num_styles == 1 and one_info.thumbnails == info.thumbnails[2:3]
    assert two_info.styles == ("d", "b") and two_info.thumbnails == (info.thumbnails[3], info.thumbnails[1])
    with torch.no_grad():
        assert torch.equal(one(x), merged(x, style=torch.eye(4)[2]))
        assert torch.equal(two(x, style=torch.eye(2)[0]), merged(x, style=torch.eye(4)[3]))
        assert torch.equal(two(x, style=torch.eye(2)[1]), merged(x, style=torch.eye(4)[1]))
    capsys.readouterr()
    assert main(["convert", str(out), "--select", "zz", "-o", str(single)]) == 2
    err = capsys.readouterr().err
    assert "--select" in err and "0=a, 1=b, 2=c, 3=d" in err
    one, _ = load_model(base)
    two, _ = load_model(grown)
    x = photos(1)
    with torch.no_grad():
        assert torch.equal(merged(x, style=torch.eye(4)[0]), two(x, style=torch.eye(3)[0]))
        torch.testing.assert_close(merged(x, style=torch.eye(4)[3]), two(x, style=torch.eye(3)[2]))
        torch.testing.assert_close(two(x, style=torch.eye(3)[0]), one(x), atol=1e-5, rtol=1e-5)


def test_single_style_network_ignores_a_unit_style():
    torch.manual_seed(0)
    net = TransformerNet(SPECS["light"]).eval()
    assert all(isinstance(m, nn.InstanceNorm2d) for _, m in net.norm_layers())
    x = photos(1)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, style=torch.ones(1)))
    with pytest.raises(ValueError, match="single-style"):
        net(x, style=torch.ones(2))
