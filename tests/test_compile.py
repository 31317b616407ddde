"""`train.compile` (vidiff.training.compile): a compiled training forward gives the eager outputs and parameter
gradients (U-Net, DiT, VAE at toy sizes, batch 2, through inductor); where compiling fails it warns once and
runs eagerly; and the registered model, so checkpoint and export keys, stays as it was."""

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from backbone_contract import BackboneContract, padded_cond
from test_dit import TINY as DIT_TINY
from test_unet import TINY as UNET_TINY

from vidiff.config import load_config
from vidiff.errors import VidiffError
from vidiff.models.denoisers import DenoiserConfig
from vidiff.models.dit import DiTConfig, VideoDiT
from vidiff.models.unet import FactorizedUNet, UNetConfig
from vidiff.pipelines.stage import StageConfig
from vidiff.training.compile import CompiledForward, maybe_compile, take_compile_seconds
from vidiff.training.diffusion_module import DiffusionModule, DiffusionTrainConfig
from vidiff.training.sample_keys import SampleKeys
from vidiff.training.vae_config import VAETrainConfig
from vidiff.training.vae_module import Reconstruction, VAEModule

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
VAE_TINY = ["model.block_out_channels=[8,8,16]", "model.latent_channels=4"]
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="inductor's CPU kernels need a C++ compiler (apt-get install g++)",
)


@pytest.fixture
def fresh_dynamo():
    """Each compile test starts and ends with dynamo's caches empty (no recompile limits carried over)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _grads_of(model: torch.nn.Module, out: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    (out * weight).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _same_outputs_and_gradients(model: torch.nn.Module, args: tuple) -> None:
    """Eager, then compiled through maybe_compile, on the same module: the same output and parameter gradients."""
    eager = model(*args)
    weight = torch.randn_like(eager)
    eager_grads = _grads_of(model, eager, weight)
    compiled = maybe_compile(model, True, f"the toy {type(model).__name__}")
    out = compiled(*args)
    assert compiled.error is None, f"it fell back to eager: {compiled.error}"
    assert compiled.compile_seconds is not None and compiled.compile_seconds > 0
    grads = _grads_of(model, out, weight)
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-3)
    assert grads.keys() == eager_grads.keys() and len(grads) == len(list(model.parameters()))
    for name, g in grads.items():
        torch.testing.assert_close(g, eager_grads[name], atol=1e-4, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")
    assert not any("_orig_mod" in k for k in model.state_dict())  # the module itself is untouched


@pytest.mark.slow  # inductor compiles each model's forward and backward to C++: minutes on 2 cores
@needs_cxx
@pytest.mark.parametrize(
    "model_class,config",
    [(FactorizedUNet, UNetConfig(**UNET_TINY)), (VideoDiT, DiTConfig(**DIT_TINY))],
    ids=["unet", "dit"],
)
def test_compiled_denoiser_gives_the_eager_outputs_and_gradients(fresh_dynamo, model_class, config):
    # zero-initialised layers (temporal residuals, adaLN-Zero) get weights, so every parameter has a gradient
    model = BackboneContract.perturb(model_class(config)).train()
    x, t = torch.randn(2, 4, 3, 8, 8), torch.rand(2)
    _same_outputs_and_gradients(model, (x, t, padded_cond(2, d=config.text_dim)))


@pytest.mark.slow
@needs_cxx
def test_compiled_vae_forward_gives_the_eager_outputs_and_gradients(fresh_dynamo):
    cfg = load_config(VAETrainConfig, ROOT / "configs/toy/vae.yaml", VAE_TINY)
    vae = BackboneContract.perturb(VAEModule(cfg).vae, std=0.01)
    # the posterior's mode and no latent noise: random draws differ between compiled and eager code
    forward = Reconstruction(vae, sample_posterior=False, latent_noise=0.0)

    class ReconOnly(torch.nn.Module):  # one output tensor: the reconstruction and the KL side by side
        def __init__(self):
            super().__init__()
            self.inner = forward

        def forward(self, x):
            recon, kl = self.inner(x)
            return torch.cat([recon.flatten(1), kl[:, None]], dim=1)

    _same_outputs_and_gradients(ReconOnly(), (torch.rand(2, 3, 9, 32, 32) * 2 - 1,))


# ---------------------------------------------------------------------------- falling back (no inductor runs)


class FakeCompileFailure(torch._dynamo.exc.TorchDynamoException):
    """What torch._dynamo raises when inductor fails (BackendCompilerFailed is one of these)."""


@pytest.fixture
def failing_compile(monkeypatch):
    """torch.compile returns a function that fails as inductor does without a C++ compiler; counts its calls."""
    calls = []

    def fake_compile(module, **kwargs):
        assert kwargs.get("dynamic") is False  # static shapes, as asked

        def compiled(*args, **kw):
            calls.append(args)
            raise FakeCompileFailure("backend='inductor' raised:\nInvalidCxxCompiler: No working C++ compiler found")

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def _one_warning(record) -> str:
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    return messages[0]


def test_a_failing_compile_warns_once_and_runs_eagerly(failing_compile):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    forward = maybe_compile(model, True, "the toy linear model")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first, second = forward(x), forward(x)
    message = _one_warning(record)
    assert "the toy linear model" in message and "FakeCompileFailure" in message and "No working C++" in message
    assert "falls back to eager" in message and "train.compile=false" in message
    torch.testing.assert_close(first, model(x), rtol=0, atol=0)
    torch.testing.assert_close(second, model(x), rtol=0, atol=0)
    assert len(failing_compile) == 1  # the second call went straight to eager
    assert not forward.compiled and "FakeCompileFailure" in forward.error
    assert forward.compile_seconds is not None  # the time the failed attempt took
    first.sum().backward()  # the eager output trains as usual
    assert model.weight.grad is not None


def test_torch_compile_refusing_the_module_falls_back_too(monkeypatch):
    def refuse(module, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuse)
    model = torch.nn.Linear(4, 3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        forward = maybe_compile(model, True, "the toy linear model")
        out = forward(torch.ones(1, 4))
    assert "Dynamo is not supported" in _one_warning(record)
    torch.testing.assert_close(out, model(torch.ones(1, 4)))


def test_an_error_of_the_forward_itself_still_raises(monkeypatch):
    class Checks(torch.nn.Module):
        def forward(self, x):
            if x.shape[-1] != 4:
                raise VidiffError(f"x must have 4 features, got {x.shape[-1]}")
            return x

    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # a "compiled" call that raises as eager does
    forward = maybe_compile(Checks(), True, "checks")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(VidiffError, match="4 features, got 5"):
            forward(torch.ones(1, 5))
    assert not record and forward.compiled  # no compile failure reported, compiling stays on


def test_off_means_the_module_itself():
    model = torch.nn.Linear(2, 2)
    assert maybe_compile(model, False, "x") is model
    assert take_compile_seconds(model) is None


def test_compile_seconds_are_taken_once(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)
    forward = maybe_compile(torch.nn.Linear(2, 2), True, "x")
    assert isinstance(forward, CompiledForward) and take_compile_seconds(forward) is None  # not called yet
    forward(torch.ones(1, 2))
    forward(torch.ones(1, 2))
    seconds = take_compile_seconds(forward)
    assert seconds is not None and seconds >= 0 and take_compile_seconds(forward) is None


# ---------------------------------------------------------------------------- in the training modules


def _tiny_stage_config() -> StageConfig:
    return StageConfig(latent_channels=4, latent_frames=3, latent_height=8, latent_width=8,
                       denoiser=DenoiserConfig(kind="unet", unet=UNetConfig(**UNET_TINY)))


def test_diffusion_training_keeps_its_keys_and_falls_back_with_one_warning(failing_compile):
    eager = DiffusionModule(_tiny_stage_config(), DiffusionTrainConfig(compile=False))
    module = DiffusionModule(_tiny_stage_config(), DiffusionTrainConfig(compile=True))
    assert list(module.state_dict()) == list(eager.state_dict())  # no `_orig_mod.`, no second copy of the stage
    assert [n for n, _ in module.named_modules()] == [n for n, _ in eager.named_modules()]
    assert eager.train_forward is eager.stage and module.train_forward.module is module.stage

    latents = torch.randn(2, 4, 3, 8, 8)
    cond = padded_cond(2, d=16)
    keys = SampleKeys.for_rank(0, 0, 2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        losses = [module.objective(module.stage, latents, cond, keys, module.train_forward).loss for _ in range(2)]
    assert "the base stage's unet denoiser" in _one_warning(record)
    expected = module.objective(module.stage, latents, cond, keys).loss  # the stage itself, eagerly
    assert losses[0].item() == losses[1].item() == expected.item()


def test_vae_training_keeps_its_keys_and_falls_back_with_one_warning(failing_compile):
    cfg = load_config(VAETrainConfig, ROOT / "configs/toy/vae.yaml", [*VAE_TINY, "train.compile=true"])
    module = VAEModule(cfg)
    eager = VAEModule(load_config(VAETrainConfig, ROOT / "configs/toy/vae.yaml", VAE_TINY))
    assert list(module.state_dict()) == list(eager.state_dict())
    assert module.reconstruct.module.vae is module.vae

    x = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        torch.manual_seed(1)
        _, parts, recon = module.losses(x, adv=False)
        module.losses(x, adv=False)
    assert "the VAE" in _one_warning(record)
    torch.manual_seed(1)  # the same posterior sample and latent noise, eagerly
    eager_recon, eager_kl = Reconstruction(module.vae, cfg.train.sample_posterior, cfg.train.latent_noise)(x)
    assert torch.equal(recon, eager_recon)
    assert parts["kl"].item() == (eager_kl.mean() / x[0].numel()).item()
