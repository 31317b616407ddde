"""The contract every denoiser backbone keeps (FactorizedUNet, and the VideoDiT next): one set of
property tests that a backbone's test class runs by declaring a tiny config, as diffusers' ModelTesterMixin."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch
from safetensors import safe_open

from vidiff.errors import VidiffError
from vidiff.models.cond import Cond


@pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only wait on each other on a shared CPU
def padded_cond(b: int, length: int = 6, d: int = 16, **kw) -> Cond:
    """Random text tokens with the last two padded (masked), as the text encoder gives; other fields as given."""
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[:, length - 2 :] = False
    return Cond(torch.randn(b, length, d), mask, **kw)


class BackboneContract:
    """Mix into a `Test...` class that sets `model_class` and defines `tiny_config(**overrides)`:

        class TestFactorizedUNet(BackboneContract):
            model_class = FactorizedUNet

            def tiny_config(self, **overrides):
                return UNetConfig(**{**TINY, **overrides})

    What the backbone must provide:

    - `model_class(config)` builds it from its config dataclass, kept as `model.config`; a fresh
      model is in training mode, with no dropout in the tiny config.
    - Config fields, all accepted as `tiny_config` overrides: `in_channels`, `text_dim`, and the other
      fields of `vidiff.models.conditioning.ConditioningConfig`: `lowres_channels`, `image_channels`,
      `fps_conditioning`, `noise_aug_conditioning` (use `ConditioningEmbedding` and
      `concat_conditioning` from that module, and all of this holds).
    - `forward(x_t [B, in_channels, T, H, W], t [B] in [0, 1], cond: Cond) -> [B, in_channels, T, H, W]`
      for any T >= 1 and any H, W on its grid (`clip_size`, `unseen_sizes` below), the rows of a
      batch independent of one another, text tokens masked out by `cond.text_mask` without effect, a
      caption-less row (all-False mask) conditioned on a learned null token only, frames marked
      False in `cond.frame_mask` without effect on the others, `cond.fps` / `cond.noise_aug_level`
      reaching the output once their (zero-initialised) embeddings are trained.
    - Temporal layers: their parameters sit under a module whose name starts with "temporal"
      (override `is_temporal`); they are zero-initialised residuals, so at initialisation a clip is
      processed exactly as its frames one by one, and they are skipped at T == 1 (trained or not).
      With `image_overrides` (config overrides giving the model without temporal layers), those
      weights load into the video model with strict=False and give the same T == 1 output.
    - Extra conditioning channels (`lowres_channels`, `image_channels`) are concatenated after x's
      channels and their input weights start at zero, so the weights of a model without them,
      loaded into one with them, give the same output: tensors whose shapes differ must differ only
      in dim 1, the input channels (as in a conv's weight; override `load_into_wider` otherwise).
    - `enable_gradient_checkpointing(enabled=True)`: the same gradients, recomputed in backward.
    - `vidiff.models.pretrained.PretrainedMixin`: `config_class`, `model_kind`,
      `save_pretrained(folder)`, `from_pretrained(folder)` give back exactly the same model.
    - Errors a user can cause raise `VidiffError`: x not 5-D, wrong channel count, text of the wrong
      width, a batch-size mismatch, cond.lowres / cond.image_latent of the wrong shape.
    - It learns: a tiny model overfits one clip (v-prediction loss on held-out noise falls > 10x).

    Optional class attributes: `clip_size` (T, H, W of the test clips), `unseen_sizes`,
    `image_overrides`, `overfit_overrides` / `overfit_steps` / `overfit_lr`.
    """

    model_class: ClassVar[type]
    clip_size: ClassVar[tuple[int, int, int]] = (3, 8, 8)
    unseen_sizes: ClassVar[tuple[tuple[int, int, int], ...]] = ((1, 8, 8), (7, 8, 8), (2, 16, 8), (3, 8, 24))
    image_overrides: ClassVar[dict[str, Any] | None] = None
    overfit_overrides: ClassVar[dict[str, Any]] = {}
    overfit_steps: ClassVar[int] = 150
    overfit_lr: ClassVar[float] = 5e-3

    def tiny_config(self, **overrides):
        raise NotImplementedError("a backbone's test class returns its tiny config here")

    # ------------------------------------------------------------------ helpers

    def model(self, **overrides):
        return self.model_class(self.tiny_config(**overrides))

    @staticmethod
    def is_temporal(name: str) -> bool:
        return any(part.startswith("temporal") for part in name.split("."))

    @staticmethod
    def perturb(model, which=lambda name: True, std: float = 0.05):
        """Give zero-initialised layers non-zero weights, as training would."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                if which(name):
                    p.add_(torch.randn_like(p) * std)
        return model

    @staticmethod
    def cond(model, b: int, length: int = 6, **fields) -> Cond:
        mask = torch.ones(b, length, dtype=torch.bool)
        mask[:, length - 2 :] = False  # padding at the end, as the text encoder gives
        return Cond(torch.randn(b, length, model.config.text_dim), mask, **fields)

    def inputs(self, model, b: int = 2, size: tuple[int, int, int] | None = None, **fields):
        t_, h, w = size or self.clip_size
        x = torch.randn(b, model.config.in_channels, t_, h, w)
        return x, torch.rand(b), self.cond(model, b, **fields)

    def load_into_wider(self, base, wider) -> None:
        """Load `base`'s weights into `wider`, the same backbone with extra conditioning channels;
        the extra input channels keep their initial values."""
        own = wider.state_dict()
        state = base.state_dict()
        assert own.keys() == state.keys(), sorted(own.keys() ^ state.keys())
        for key, value in state.items():
            if value.shape != own[key].shape:
                assert own[key].shape[:1] + own[key].shape[2:] == value.shape[:1] + value.shape[2:], key
                grown = own[key].clone()
                grown[:, : value.shape[1]] = value
                state[key] = grown
        wider.load_state_dict(state, strict=True)

    # ------------------------------------------------------------------ the contract

    def test_output_has_the_input_shape(self):
        model = self.model()
        x, t, cond = self.inputs(model)
        with torch.no_grad():
            y = model(x, t, cond)
        assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
        assert model.config_class is type(model.config) and model.model_kind

    def test_runs_at_unseen_lengths_and_sizes(self):
        model = self.perturb(self.model())
        with torch.no_grad():
            for size in self.unseen_sizes:
                x, t, cond = self.inputs(model, b=1, size=size)
                y = model(x, t, cond)
                assert y.shape == x.shape and torch.isfinite(y).all(), size

    def test_clip_is_processed_as_its_frames_at_init(self):
        model = self.perturb(self.model(fps_conditioning=True), lambda n: not self.is_temporal(n))
        x, t, cond = self.inputs(model, size=(5, *self.clip_size[1:]), fps=torch.tensor([8.0, 4.0]))
        frames = x.shape[2]
        with torch.no_grad():
            video = model(x, t, cond)
            one_by_one = torch.cat([model(x[:, :, i : i + 1], t, cond) for i in range(frames)], dim=2)
            torch.testing.assert_close(video, one_by_one, atol=1e-5, rtol=1e-4)
            assert video.abs().mean() > 1e-2
            # once temporal layers have weights (training), frames do interact
            self.perturb(model, self.is_temporal)
            assert (model(x, t, cond) - one_by_one).abs().max() > 1e-3

    def test_single_frame_skips_temporal_layers(self):
        model = self.perturb(self.model())
        x, t, cond = self.inputs(model, b=3, size=(1, *self.clip_size[1:]))
        with torch.no_grad():
            before = model(x, t, cond)
            self.perturb(model, self.is_temporal, std=0.5)  # even trained temporal layers are skipped
            torch.testing.assert_close(model(x, t, cond), before, atol=0, rtol=0)
            if self.image_overrides is None:
                return
            image = self.perturb(self.model(**self.image_overrides))
            missing, unexpected = model.load_state_dict(image.state_dict(), strict=False)
            assert missing and all(self.is_temporal(k) for k in missing) and not unexpected
            torch.testing.assert_close(model(x, t, cond), image(x, t, cond), atol=0, rtol=0)

    def test_save_and_load_pretrained_is_exact(self, tmp_path):
        model = self.perturb(self.model(fps_conditioning=True)).eval()
        folder = model.save_pretrained(tmp_path / "model")
        again = self.model_class.from_pretrained(folder)
        assert type(again) is self.model_class and again.config == model.config and not again.training
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            assert f.metadata()["vidiff_kind"] == self.model_class.model_kind
        mine, theirs = model.state_dict(), again.state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
        x, t, cond = self.inputs(model, fps=torch.tensor([8.0, 4.0]))
        with torch.no_grad():
            assert torch.equal(again(x, t, cond), model(x, t, cond))

    def test_gradient_checkpointing_gives_the_same_gradients(self):
        model = self.perturb(self.model())
        x, t, cond = self.inputs(model)

        def grads():
            model.zero_grad(set_to_none=True)
            model(x, t, cond).square().mean().backward()
            return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

        plain = grads()
        assert model.enable_gradient_checkpointing() is model
        ckpt = grads()
        model.enable_gradient_checkpointing(False)
        assert plain.keys() == ckpt.keys() and len(plain) == len(list(model.parameters()))
        for name in plain:
            torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)

    def test_extra_conditioning_channels_start_at_zero(self):
        base = self.perturb(self.model())
        wider = self.model(lowres_channels=4, image_channels=3)
        self.load_into_wider(base, wider)
        b, (frames, h, w) = 2, self.clip_size
        x, t, cond = self.inputs(base, b)
        lowres = torch.randn(b, 4, frames, h // 2, w // 2)
        image = torch.randn(b, 3, 1, h, w)
        full = Cond(cond.text, cond.text_mask, lowres=lowres, image_latent=image)
        with torch.no_grad():
            y = base(x, t, cond)
            torch.testing.assert_close(wider(x, t, full), y, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(wider(x, t, cond), y, atol=1e-5, rtol=1e-4)
            # trained, each input reaches the output; an absent one is zeros
            self.perturb(wider)
            plain = wider(x, t, cond)
            zeros = Cond(
                cond.text,
                cond.text_mask,
                lowres=torch.zeros_like(lowres),
                image_latent=torch.zeros_like(image),
            )
            torch.testing.assert_close(wider(x, t, zeros), plain, atol=0, rtol=0)
            with_lowres = wider(x, t, Cond(cond.text, cond.text_mask, lowres=lowres))
            with_image = wider(x, t, Cond(cond.text, cond.text_mask, image_latent=image))
            assert with_lowres.shape == x.shape
            assert (with_lowres - plain).abs().max() > 1e-4 and (with_image - plain).abs().max() > 1e-4

    def test_fps_and_noise_level_embeddings_start_at_zero(self):
        model = self.perturb(self.model())
        extra = self.model(fps_conditioning=True, noise_aug_conditioning=True)
        missing, unexpected = extra.load_state_dict(model.state_dict(), strict=False)
        assert missing and not unexpected
        x, t, cond = self.inputs(model)
        fields = dict(fps=torch.tensor([4.0, 16.0]), noise_aug_level=torch.tensor([0.1, 0.5]))
        with torch.no_grad():
            y = model(x, t, cond)
            torch.testing.assert_close(
                extra(x, t, Cond(cond.text, cond.text_mask, **fields)), y, atol=0, rtol=0
            )
            self.perturb(extra)
            plain = extra(x, t, cond)
            for name, value in fields.items():
                changed = extra(x, t, Cond(cond.text, cond.text_mask, **{name: value}))
                assert (changed - plain).abs().max() > 1e-4, name

    def test_text_mask_null_token_and_cfg_batch(self):
        model = self.perturb(self.model())
        x, t, cond = self.inputs(model)
        d = model.config.text_dim
        with torch.no_grad():
            y = model(x, t, cond)
            padded = cond.text.clone()
            padded[:, -2:] = torch.randn(2, 2, d) * 10  # masked positions: no effect
            torch.testing.assert_close(model(x, t, Cond(padded, cond.text_mask)), y)
            real = cond.text.clone()
            real[:, 1] += torch.randn(d)  # a real token: an effect
            assert (model(x, t, Cond(real, cond.text_mask)) - y).abs().max() > 1e-4
            null = model(x, t, cond.null_like())
            other = model(x, t, Cond(torch.randn(2, 9, d), torch.zeros(2, 9, dtype=torch.bool)))
            assert torch.isfinite(null).all() and (null - y).abs().max() > 1e-4
            torch.testing.assert_close(null, other)  # unconditional = only the learned null token
            both = model(torch.cat([x, x]), torch.cat([t, t]), Cond.cat([cond, cond.null_like()]))
            torch.testing.assert_close(both[:2], y, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(both[2:], null, atol=1e-5, rtol=1e-4)

    def test_padded_frames_do_not_change_real_frames(self):
        model = self.perturb(self.model(), std=0.1)
        x, t, cond = self.inputs(model, b=1, size=(6, *self.clip_size[1:]))
        mask = torch.tensor([[True] * 4 + [False] * 2])
        with torch.no_grad():
            padded = model(x, t, Cond(cond.text, cond.text_mask, frame_mask=mask))
            short = model(x[:, :, :4], t, cond)
            torch.testing.assert_close(padded[:, :, :4], short, atol=1e-5, rtol=1e-4)

    def test_bad_inputs_raise_vidiff_errors(self):
        model = self.model(lowres_channels=4, image_channels=3)
        x, t, cond = self.inputs(model, b=1)
        c, (frames, h, w) = model.config.in_channels, self.clip_size
        with pytest.raises(VidiffError, match="channels"):
            model(torch.randn(1, c + 1, frames, h, w), t, cond)
        with pytest.raises(VidiffError, match="text_dim"):
            model(x, t, Cond(torch.randn(1, 6, model.config.text_dim + 1), cond.text_mask))
        with pytest.raises(VidiffError, match="batch size"):
            model(torch.cat([x, x]), torch.cat([t, t]), cond)
        with pytest.raises(VidiffError, match=r"\[B, C, T, H, W\]"):
            model(x[0], t, cond)
        with pytest.raises(VidiffError, match=r"cond\.lowres .*\[B, 4, T', h, w\]"):
            model(x, t, Cond(cond.text, cond.text_mask, lowres=torch.randn(1, 3, frames, h, w)))
        with pytest.raises(VidiffError, match=rf"cond\.image_latent .*\[B, 3, 1, {h}, {w}\]"):
            model(x, t, Cond(cond.text, cond.text_mask, image_latent=torch.randn(1, 4, 1, h, w)))

    def test_tiny_model_overfits_one_clip(self):
        """v-prediction diffusion training on one moving-square clip: held-out-noise loss falls > 10x."""
        torch.manual_seed(0)
        model = self.model(**self.overfit_overrides)
        c = model.config.in_channels
        frames, size = 4, 8
        clip = torch.full((c, frames, size, size), -0.8)
        for f in range(frames):  # a square moving right over a gradient background
            clip[0, 2:5, 1 + f : 4 + f] = 0.9
            clip[1 % c, 2:5, 1 + f : 4 + f] = 0.2
        clip[2 % c] += torch.linspace(0, 0.6, size)
        clip[3 % c] += torch.linspace(0, 0.6, size)[:, None]

        def noisy(n, gen):
            t = torch.rand(n, generator=gen)
            a, s = (f(math.pi / 2 * t).view(-1, 1, 1, 1, 1) for f in (torch.cos, torch.sin))
            eps = torch.randn((n, *clip.shape), generator=gen)
            return a * clip + s * eps, t, a * eps - s * clip

        held_out = noisy(32, torch.Generator().manual_seed(123))
        null = Cond(torch.zeros(32, 1, model.config.text_dim), torch.zeros(32, 1, dtype=torch.bool))

        def held_out_loss():
            with torch.no_grad():
                return (model(held_out[0], held_out[1], null) - held_out[2]).square().mean().item()

        steps, batch, lr = self.overfit_steps, 8, self.overfit_lr
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        gen = torch.Generator().manual_seed(0)
        before = held_out_loss()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tensors this small gain nothing from threads, and lose a lot on a busy CPU
        try:
            for _ in range(steps):
                xt, t, v = noisy(batch, gen)
                loss = (model(xt, t, null[:batch]) - v).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        finally:
            torch.set_num_threads(threads)
        after = held_out_loss()
        print(f"held-out v-loss {before:.4f} -> {after:.4f} ({before / after:.1f}x) in {steps} steps")
        assert before / after > 10, (before, after)
